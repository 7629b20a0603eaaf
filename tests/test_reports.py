import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctvlp.data import reports as R
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.errors import BadReportError

REPORT = (
    "CLINICAL INFORMATION: Cough and fever.\n"
    "TECHNIQUE: Non-contrast chest CT with 1.5 mm sections.\n"
    "FINDINGS: Trachea and both main bronchi are open. Mediastinal structures were evaluated as "
    "suboptimal since the examination was unenhanced. Calcific atheroma plaques in the coronary arteries. "
    "Heart contour and size are normal. No pericardial effusion. A 3.5 mm nodule approx. 2 cm from the "
    "pleura in the right upper lobe. No lytic-destructive lesions were detected in the bone structures "
    "within the sections. Upper abdominal organs included in the sections are normal.\n"
    "IMPRESSION: 1. Coronary artery calcification. 2. Lung nodule."
)


def test_sections_and_sentences_golden():
    sections = R.split_sections(REPORT)
    assert list(sections) == ["clinical", "technique", "findings", "impressions"]
    assert sections["clinical"] == "Cough and fever."
    sentences = R.split_sentences(sections["findings"])
    assert len(sentences) == 8
    assert sentences[5] == "A 3.5 mm nodule approx. 2 cm from the pleura in the right upper lobe."
    assert R.split_sentences(sections["impressions"]) == ["Coronary artery calcification.", "Lung nodule."]


def test_text_without_headers_is_findings():
    assert R.split_sections("Both lungs are clear.") == {"findings": "Both lungs are clear."}


@pytest.mark.parametrize("sentence, organs", [
    ("Trachea and both main bronchi are open.", ["trachea_bronchi"]),
    ("Calcific atheroma plaques in the coronary arteries.", ["heart"]),
    ("Thoracic aorta diameter is normal.", ["aorta", "mediastinum"]),
    ("No pericardial effusion.", ["heart", "pericardium"]),
    ("Bilateral pleural effusion.", ["pleura"]),
    ("Sliding hiatal hernia.", ["esophagus"]),
    ("Enlarged subcarinal lymph node.", ["mediastinum"]),
    ("Centrilobular emphysema in the upper lobes.", ["lung"]),
    ("Upper abdominal organs included in the sections are normal.", ["abdomen"]),
    ("The thyroid gland is unremarkable.", ["thyroid"]),
    ("No lytic-destructive lesions were detected in the bone structures.", ["bone"]),
    ("Bronchiectasis in the left lower lobe.", ["lung"]),
])
def test_organ_assignment(sentence, organs):
    assert R.assign_organs(sentence) == organs


@pytest.mark.parametrize("sentence, negated", [
    ("No pleural effusion.", True), ("Pleural effusion is present.", False),
    ("Pleural effusion is not seen.", True), ("There is no evidence of consolidation.", True),
    ("Absence of pericardial effusion.", True), ("Heart size is within normal limits.", True),
    ("The esophagus is unremarkable.", True), ("A 5 mm nodule in the right upper lobe.", False),
    ("Malignancy cannot be excluded in the nodule.", False),
    ("Emphysema, without pleural effusion.", False),  # the finding clause is not negated
])
def test_negation(sentence, negated):
    assert R.is_negated(sentence) is negated


def test_extract_labels_golden():
    labels = R.extract_labels(REPORT)
    assert {k for k, v in labels.items() if v} == {"Coronary artery wall calcification", "Lung nodule"}
    assert R.extract_labels("Calcified plaques in the wall of the thoracic aorta. No coronary calcification.")[
        "Arterial wall calcification"] == 1
    assert R.extract_labels("No emphysema, no pleural effusion.")["Emphysema"] == 0
    assert list(R.extract_labels("")) == list(CTRATE_LABELS)


@pytest.mark.parametrize("sentence, opposite", [
    ("Pleural effusion is present.", "No pleural effusion."),
    ("No pleural effusion.", "Pleural effusion is present."),
    ("There is a 5 mm nodule in the right upper lobe.", "There is no nodule in the right upper lobe."),
    ("Heart contour and size are normal.", "Heart contour and size are abnormal."),
    ("Pericardial effusion is not seen.", "Pericardial effusion is seen."),
])
def test_opposite_golden(sentence, opposite):
    assert R.opposite_sentence(sentence) == opposite


def test_canonical_organ_radgenome_names():
    assert R.canonical_organ("trachea and bronchie") == "trachea_bronchi"
    assert R.canonical_organ("Left lung") == "lung"
    assert R.canonical_organ("right lung upper lobe") == "lung"
    assert R.canonical_organ("others") == "other"
    assert R.canonical_organ("lung_nodule") is None  # a finding mask is not an organ
    assert all(R.canonical_organ(o.replace("_", " ")) == o for o in R.ORGANS if o != "trachea_bronchi")


def test_not_text_is_a_clear_error():
    for bad in (None, float("nan"), 3, b"\xff\xfe\xfa"):
        with pytest.raises(BadReportError, match="not"):
            R.parse_report(bad)


@pytest.mark.parametrize("empty", ["", "   ", "\n\t\n"])
def test_empty_reports_give_empty_results(empty):
    assert R.split_sections(empty) == {}
    assert R.split_sentences(empty) == []
    assert R.parse_report(empty) == []
    assert R.organ_sentences(empty) == {}
    assert not any(R.extract_labels(empty).values())


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_crashes_on_arbitrary_text(text):
    sentences = R.split_sentences(text)
    assert all(s and s == s.strip() for s in sentences)
    for s in sentences:  # nothing invented: each sentence's characters come from the input, in order
        it = iter(text)
        assert all(c in it for c in s.replace(" ", ""))
    R.parse_report(text)
    R.organ_sentences(text)
    R.extract_labels(text)
    R.opposite_sentence(text)
    R.canonical_organ(text)
    R.split_sections(text)


FINDING_WORDS = ["pleural effusion", "pericardial effusion", "emphysema", "consolidation", "atelectasis",
                 "bronchiectasis", "hiatal hernia", "cardiomegaly", "mosaic attenuation"]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(FINDING_WORDS), st.booleans())
def test_opposite_flips_negation_and_round_trips(finding, negative):
    sentence = f"No {finding}." if negative else f"{finding.capitalize()} is present."
    flipped = R.opposite_sentence(sentence)
    assert R.is_negated(flipped) is not negative
    assert finding in flipped.lower()
    assert R.opposite_sentence(flipped) == sentence


def test_canonical_organ_accepts_its_own_ids():
    """Mask names are written as organ ids; every id maps to itself (``trachea_bronchi`` did not)."""
    assert all(R.canonical_organ(organ) == organ for organ in R.ORGANS)

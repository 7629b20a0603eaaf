from ctvlp.cli import main

raise SystemExit(main())

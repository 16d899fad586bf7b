from kfold_clr.cli import main

raise SystemExit(main())

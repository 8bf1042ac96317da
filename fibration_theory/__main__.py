from fibration_theory.cli import main

raise SystemExit(main())

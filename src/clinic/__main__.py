from clinic.cli import main

raise SystemExit(main())

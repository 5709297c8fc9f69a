from sohoa.cli import main

raise SystemExit(main())

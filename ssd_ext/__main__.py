from ssd_ext.cli import main

raise SystemExit(main())

from scaleup.testbed.build import main

raise SystemExit(main())

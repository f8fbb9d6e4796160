"""python -m processes.order_manager: run this process alone (see --help)."""

from processes.order_manager.service import main

raise SystemExit(main())

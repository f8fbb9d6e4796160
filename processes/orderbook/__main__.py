"""python -m processes.orderbook: run this process alone (see --help)."""

from processes.orderbook.service import main

raise SystemExit(main())

"""python -m processes.gateway: run this process alone (see --help)."""

from processes.gateway.service import main

raise SystemExit(main())

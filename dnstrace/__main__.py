"""Allow ``python -m dnstrace``."""

from dnstrace.cli import main

raise SystemExit(main())

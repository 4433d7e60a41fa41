"""Allow ``python -m appliance`` as well as the ``telemancer`` script."""

from appliance.cli import main

raise SystemExit(main())

"""A run shared by many workers: the driver that plans it into a shared ledger and the
workers that claim its tasks (``pixelfleet worker``)."""

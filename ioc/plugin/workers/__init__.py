"""Several writer workers share one detector stream (pvAccess's data distributor); the IOC
clients drive coordinates them and writes one master file (virtual datasets)."""

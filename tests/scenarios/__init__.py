"""Guest-visible scenarios: the gen guest on chains, machines, snapshots and medium types."""

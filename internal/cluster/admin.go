package cluster

// startAdmin starts what answers other nodes' admin requests (the
// cluster-wide admin API). Called by Start once connected.
func (n *Node) startAdmin() error { return nil }

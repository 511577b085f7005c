package main

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/coder/websocket"
)

func TestPlacementSpreadsEveryGroup(t *testing.T) {
	senders := map[int]int{}
	for g := range fanGroups {
		group := "g" + strconv.Itoa(g)
		perNode := make([]int, clusterNodes)
		for m := range fanMembers {
			perNode[placement(group, "m"+strconv.Itoa(m), clusterNodes)]++
		}
		for node, k := range perNode {
			if k < fanMembers/clusterNodes {
				t.Errorf("group %s: node %d has %d members, want at least %d (all: %v)", group, node, k, fanMembers/clusterNodes, perNode)
			}
		}
		senders[placement(group, "m0", clusterNodes)]++
	}
	if len(senders) != clusterNodes {
		t.Errorf("senders on nodes %v, want every node", senders)
	}
	// The blob workload's members: sender on the first node, receivers on
	// the others.
	for i := range clusterNodes {
		if got := placement("blob", "m"+strconv.Itoa(i), clusterNodes); got != i {
			t.Errorf("blob m%d on node %d, want %d", i, got, i)
		}
	}
}

func TestEndLogByCloseStatus(t *testing.T) {
	var l endLog
	if l.String() != "0" {
		t.Fatalf("empty log reads %q", l.String())
	}
	missed := fmt.Errorf("read: %w", websocket.CloseError{Code: 4004, Reason: "missed messages"})
	l.record(missed)
	l.record(missed)
	l.record(errors.New("EOF"))
	if l.count() != 3 {
		t.Errorf("count %d, want 3", l.count())
	}
	want := `3 (1 x "EOF", 2 x "4004 missed messages")`
	if l.String() != want {
		t.Errorf("log reads %s, want %s", l.String(), want)
	}
}

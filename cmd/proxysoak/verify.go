package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// failKind classifies a failure. Every failure is printed (the first
// printLimit of each kind on stdout, all of them in failures.txt).
type failKind int

const (
	failCorrupt    failKind = iota // bytes, length, type or header wrong
	failCrossGroup                 // a message from another group
	failSelf                       // a message from the receiver's own id
	failOrder                      // a sequence number not above the last one from that sender
	failGap                        // a message missing between two received from the same sender
	failMissing                    // a message a receiver should have had, missing
	failClose                      // a close code outside the allowed set, or 1006 while reading
	failFinal                      // the final close was not answered with 1000
	failReplace                    // a replacement that did not close the old connection, or 4001 without one
	failKick                       // a kick that failed or did nothing, or 4003 without one
	failStuck                      // a connection or sender that did not end or progress
	failStall                      // a sender closed for a stall it did not make
	failDial                       // a WebSocket dial that failed
	failResources                  // resources not back near the baseline
	failProxy                      // the proxy died, misbehaved at exit, or its log shows a panic
	numFailKinds
)

var failNames = [numFailKinds]string{
	"corrupt", "cross-group", "self-delivery", "order", "gap", "missing", "close-code", "final-close",
	"replace", "kick", "stuck", "false-stall", "dial", "resources", "proxy",
}

func (k failKind) String() string { return failNames[k] }

const printLimit = 40

type failure struct {
	kind failKind
	at   time.Duration
	text string
}

// fail records a failure and prints it at once.
func (s *soak) fail(kind failKind, format string, args ...any) {
	f := failure{kind: kind, at: s.since(), text: fmt.Sprintf(format, args...)}
	s.mu.Lock()
	s.failures = append(s.failures, f)
	s.printed[kind]++
	n := s.printed[kind]
	s.mu.Unlock()
	line := fmt.Sprintf("FAIL [%s] %s: %s", kind, ts(f.at), f.text)
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintln(s.failW, line)
	switch {
	case n <= printLimit:
		fmt.Fprintln(s.out, line)
	case n == printLimit+1:
		fmt.Fprintf(s.out, "FAIL [%s] more failures of this kind go to failures.txt only\n", kind)
	}
}

// allowedCodes are the close codes from the proxy that end a receiver
// legitimately (SPEC section 6): the receiver may then miss what was in
// flight.
var allowedCodes = map[int]bool{1001: true, 1008: true, 4001: true, 4002: true, 4003: true}

// never is a time after every other.
const never = time.Duration(math.MaxInt64)

// stopAt is when the receiver c stopped taking messages, as far as the
// client can tell: its close request, the soak's drop, or the end; moved
// back to the start of a freeze the end came soon after. A message the proxy
// had more than the slack before must have arrived. For a connection that
// lasted until the final close, never.
func (s *soak) stopAt(c *conn) time.Duration {
	if c.kind == endFinal {
		return never // the drain before the final close let everything arrive
	}
	c.mu.Lock()
	stop := c.endAt
	switch c.kind {
	case endOwn:
		stop = c.selfAt
	case endDropped:
		stop = c.dropAt
	}
	c.mu.Unlock()
	if len(c.frozen) > 0 {
		f := c.frozen[len(c.frozen)-1]
		if f.at <= stop && f.at+f.dur+s.cfg.slack >= stop {
			stop = f.at
		}
	}
	return stop
}

// endExcuses reports whether c's end excuses every message it missed: the
// proxy closed it with an allowed code (its queue, however old, is then
// dropped), or cut it after it had stopped reading for --write-timeout.
func (s *soak) endExcuses(c *conn) bool {
	switch c.kind {
	case endPeer:
		return allowedCodes[c.code]
	case endAbnormal:
		return c.role == roleStaller && c.maxFreeze() >= s.cfg.writeTimeout
	}
	return false
}

func (c *conn) maxFreeze() time.Duration {
	var m time.Duration
	for _, f := range c.frozen {
		m = max(m, f.dur)
	}
	return m
}

// frozenDuring reports whether c was frozen at some point in [from, to].
func (c *conn) frozenDuring(from, to time.Duration) bool {
	for _, f := range c.frozen {
		if f.at <= to && f.at+f.dur >= from {
			return true
		}
	}
	return false
}

// verify runs the checks that need the whole run: how each connection
// ended, replacements and kicks, and missing messages.
func (s *soak) verify(all []*conn) {
	var done []*conn
	for _, c := range all {
		if isClosed(c.done) {
			done = append(done, c)
		}
	}
	for _, c := range done {
		s.checkEnd(c)
	}
	for _, sl := range s.slots {
		s.checkSlot(sl)
	}
	s.checkDelivery(done)
}

// checkEnd judges how one connection ended.
func (s *soak) checkEnd(c *conn) {
	switch c.kind {
	case endFinal:
		if !c.echoed() {
			s.fail(failFinal, "%s: the final close (1000) was not answered with 1000: %s", c, c.life())
		}
	case endPeer:
		if !allowedCodes[c.code] {
			s.fail(failClose, "%s: closed by the proxy with %d, not an allowed code; %s", c, c.code, c.life())
		}
		// A sender writing without a planned pause that is closed for
		// "message stalled" was not stalling: the proxy was not reading
		// (waiting for its receivers) and blamed the sender.
		if c.code == 1008 && strings.Contains(c.reason, "stall") && c.wasSending && len(c.sent) > 0 {
			if m := c.sent[len(c.sent)-1]; !m.ok && m.how <= sendFragments {
				s.fail(failStall, "%s: closed with 1008 %q while writing message seq %d (%s %s, %s) without pause since %s; %s",
					c, c.reason, m.seq, sizeString(m.size), typeName(m.typ), m.how, ts(m.t0), c.life())
			}
		}
	case endOwn:
		// The proxy's close can cross the client's; but these codes are
		// never the answer to a well-behaved client.
		if c.code == 1002 || c.code == 1007 || c.code == 1009 || c.code == 1011 {
			s.fail(failClose, "%s: answered its own close with %d %q; %s", c, c.code, c.reason, c.life())
		}
	case endAbnormal:
		if c.role == roleStaller && c.maxFreeze() >= s.cfg.writeTimeout {
			return // it read nothing for --write-timeout: it may be cut
		}
		s.fail(failClose, "%s: lost without a close frame (1006) while reading (last freeze %v, sending: %v); %s",
			c, c.maxFreeze().Round(time.Millisecond), c.wasSending, c.life())
	}
}

// checkSlot checks one (group, id): 4001 only after a replacement was dialed
// and soon after it; 4003 only after a kick; after every 204 kick, the
// proxy ended a connection of that id (a slow reader may see it late).
func (s *soak) checkSlot(sl *slot) {
	sl.mu.Lock()
	conns := slices.Clone(sl.conns)
	kicks := slices.Clone(sl.kicks)
	sl.mu.Unlock()
	for i, c := range conns {
		if !isClosed(c.done) {
			continue
		}
		var next *conn // the connection dialed after c in this slot
		if i+1 < len(conns) {
			next = conns[i+1]
		}
		c.mu.Lock()
		replacing := c.replacing
		c.mu.Unlock()
		if c.kind == endPeer && c.code == 4001 && (next == nil || next.dialStart > c.endAt) {
			s.fail(failReplace, "%s: got 4001 but no connection with its id was being dialed; %s", c, c.life())
		}
		if replacing && next != nil && next.dialStart <= c.endAt {
			late := c.endAt - next.dialDone
			if late > 5*time.Second && !c.frozenDuring(next.dialDone, c.endAt) {
				s.fail(failReplace, "%s: still open %v after its replacement conn #%d connected at %s; %s",
					c, late.Round(time.Millisecond), next.no, ts(next.dialDone), c.life())
			}
		}
		if c.kind == endPeer && c.code == 4003 {
			kicked := false
			for _, k := range kicks {
				if k.sent <= c.endAt && k.done >= c.dialStart {
					kicked = true
					break
				}
			}
			if !kicked {
				s.fail(failKick, "%s: got 4003 but no kick was requested for it; %s", c, c.life())
			}
		}
	}
	for _, k := range kicks {
		if k.status != 204 {
			continue
		}
		ok := false
		for _, c := range conns {
			if !isClosed(c.done) || c.endAt < k.sent || c.dialStart > k.done {
				continue
			}
			if c.endAt <= k.done+5*time.Second || (c.kind != endOwn && c.kind != endFinal) {
				ok = true
				break
			}
		}
		if !ok {
			s.fail(failKick, "kick of group %q id %s at %s answered 204 but its connection stayed open until the client closed it more than 5s later",
				s.groups[sl.group], sl.id, ts(k.sent))
		}
	}
}

// missingKey is one (receiver, sender) pair with missing messages.
type missingKey struct{ r, s int64 }

type missingSet struct {
	r, s       *conn
	seqs       []int64
	gap        bool
	first      sentMsg
	had, stop  time.Duration
	deliveries int // of this sender's messages this receiver did get
}

// checkDelivery checks that every receiver got every message it should
// have: a complete message the proxy surely read, sent while the receiver
// was a member, with the receiver still reading for the slack after the
// proxy surely had it.
//
// When did the proxy surely have message m of sender S? By the time a
// receiver first got m or any later message of S (the proxy reads a
// sender's messages in order), or S's own close was echoed (its close frame
// came after m). Otherwise m's arrival is unproven and it is not checked: a
// sender's write returns once its bytes are in a socket buffer, which says
// nothing about the proxy.
//
// A receiver was a member when m started if its dial returned the join
// margin before S started writing m (the proxy starts reading m later).
func (s *soak) checkDelivery(done []*conn) {
	byGroup := make([][]*conn, len(s.groups))
	for _, c := range done {
		byGroup[c.group] = append(byGroup[c.group], c)
	}
	slack, margin := s.cfg.slack, s.cfg.joinMargin
	missing := map[missingKey]*missingSet{}
	var keys []missingKey
	for _, conns := range byGroup {
		stops := make([]time.Duration, len(conns))
		excusedEnd := make([]bool, len(conns))
		for i, r := range conns {
			stops[i] = s.stopAt(r)
			excusedEnd[i] = s.endExcuses(r)
		}
		for _, snd := range conns {
			had := s.proxyHad(snd)
			for j, m := range snd.sent {
				if !m.ok {
					continue
				}
				tp := had[j]
				if tp == never {
					s.unproven++
					continue
				}
				for i, r := range conns {
					if r == snd || r.id == snd.id || m.t0 < r.dialDone+margin || r.endAt < tp {
						continue
					}
					s.checked++
					t := r.tracks[snd.no]
					if t != nil && t.has(m.seq) {
						continue
					}
					if stops[i] < tp+slack || excusedEnd[i] {
						s.excused++
						continue
					}
					k := missingKey{r.no, snd.no}
					ms := missing[k]
					if ms == nil {
						ms = &missingSet{r: r, s: snd, first: m, had: tp, stop: stops[i]}
						if t != nil {
							for _, rg := range t.ranges {
								ms.deliveries += int(rg[1] - rg[0] + 1)
							}
						}
						missing[k] = ms
						keys = append(keys, k)
					}
					ms.seqs = append(ms.seqs, m.seq)
					if t != nil && m.seq < t.last() {
						ms.gap = true
					}
				}
			}
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := missing[keys[i]], missing[keys[j]]
		return a.first.t0 < b.first.t0
	})
	for _, k := range keys {
		ms := missing[k]
		kind, what := failMissing, "missing"
		if ms.gap {
			kind, what = failGap, "gap: missing"
		}
		snd := ms.s
		stop := "never stopped before the final close"
		if ms.stop != never {
			stop = "stopped reading at " + ts(ms.stop)
		}
		s.fail(kind, "%s %d message(s) seq %s from %s (first: %s %s, written %s-%s, in the proxy by %s) at %s, which got %d other(s) from it and %s. Receiver: %s. Sender: %s",
			what, len(ms.seqs), seqRanges(ms.seqs), snd, sizeString(ms.first.size), ms.first.how,
			ts(ms.first.t0), ts(ms.first.t1), ts(ms.had), ms.r, ms.deliveries, stop, ms.r.life(), snd.life())
	}
}

// endKey describes how a connection ended, for the summary.
func (s *soak) endKey(c *conn) string {
	key := c.kind.String()
	switch {
	case c.kind == endOwn || c.kind == endFinal:
		switch {
		case c.echoed():
			key += ": echoed"
		case c.code == -1:
			key += ": no close frame back"
		default:
			key += fmt.Sprintf(": answered %d %q", c.code, c.reason)
		}
	case c.kind == endAbnormal && c.role == roleStaller && c.maxFreeze() >= s.cfg.writeTimeout:
		key += " (allowed: had stopped reading for --write-timeout)"
	case c.code >= 0:
		key += fmt.Sprintf(" %d %q", c.code, c.reason)
	}
	return key
}

// proxyHad returns, for each of snd's messages (indexed as snd.sent), the
// time by which the proxy surely had read it, or never.
func (s *soak) proxyHad(snd *conn) []time.Duration {
	had := make([]time.Duration, len(snd.sent))
	cur := never
	if snd.echoed() {
		cur = snd.endAt
	}
	snd.firstMu.Lock()
	defer snd.firstMu.Unlock()
	for j := len(snd.sent) - 1; j >= 0; j-- {
		if t, ok := snd.firstRecv[snd.sent[j].seq]; ok {
			cur = min(cur, t)
		}
		had[j] = cur
	}
	return had
}

// seqRanges formats ascending sequence numbers as "3-5,9".
func seqRanges(seqs []int64) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i == j {
			fmt.Fprintf(&b, "%d", seqs[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		}
		i = j + 1
	}
	return b.String()
}

// report prints the summary and reports whether the run passed.
func (s *soak) report() bool {
	s.mu.Lock()
	failures := slices.Clone(s.failures)
	all := slices.Clone(s.all)
	s.mu.Unlock()
	ends := map[string]int{}
	for _, c := range all {
		if isClosed(c.done) {
			ends[s.endKey(c)]++
		}
	}
	p := s.logf
	p("")
	p("== proxysoak summary (seed %d) ==", s.cfg.seed)
	cpu := ""
	if s.proxyCPU > 0 {
		cpu = fmt.Sprintf("; proxy CPU %v", s.proxyCPU.Round(10*time.Millisecond))
	}
	p("time           churn %v, drain %v, settle %v; total %v%s", s.churnTime.Round(time.Millisecond),
		s.drainTime.Round(time.Millisecond), s.settleTime.Round(time.Millisecond), s.end.Round(time.Millisecond), cpu)
	p("connections    opened %d (member %d, quiet %d, staller %d, slow %d), at most %d open at once, dial failures %d",
		s.opened(), s.roles[roleMember].Load(), s.roles[roleQuiet].Load(), s.roles[roleStaller].Load(),
		s.roles[roleSlow].Load(), s.maxLive.Load(), s.dialFailures.Load())
	var hows [5]int
	var hadSent int64
	for _, c := range all {
		if isClosed(c.sendDone) {
			for _, m := range c.sent {
				hows[m.how]++
				hadSent++
			}
		}
	}
	p("sent           %d complete messages, %s (of %d started: whole %d, fragmented %d, short stall %d, long stall %d, dropped %d)",
		s.sentMsgs.Load(), sizeString(s.sentBytes.Load()), hadSent, hows[sendWhole], hows[sendFragments],
		hows[sendShortStall], hows[sendLongStall], hows[sendDrop])
	p("received       %d messages, %s; verified byte-exact and in order: %d, %s",
		s.recvMsgs.Load(), sizeString(s.recvBytes.Load()), s.verified.Load(), sizeString(s.verifiedBytes.Load()))
	p("deliveries     %d required (receiver a member from start to finish of a message the proxy surely read); %d excused (receiver stopped within %v after); %d messages' arrival at the proxy unproven (not checked)",
		s.checked, s.excused, s.cfg.slack, s.unproven)
	p("hostile acts   kicks %d (+%d answered 404; %d aimed at a sender blocked in a write), replacements %d, own closes %d, TCP drops %d, mid-message drops %d, short stalls %d, long stalls %d, freezes %d (%d vanished)",
		s.kicks.Load(), s.kickMisses.Load(), s.aimedKicks.Load(), s.replacements.Load(), s.ownCloses.Load(), s.drops.Load(),
		s.midDrops.Load(), s.shortStalls.Load(), s.longStalls.Load(), s.freezes.Load(), s.vanished.Load())
	p("backpressure   %d writes of a message up to --buffer-bytes took over 500ms", s.blockedWrites.Load())
	p("client ends    (as the clients saw them)")
	for _, k := range sortedKeys(ends) {
		p("  %6d  %s", ends[k], k)
	}
	if len(s.proxyCloses) > 0 {
		p("proxy closes   (wsproxy_closes_total)")
		for _, k := range sortedKeys(s.proxyCloses) {
			p("  %6.0f  %s", s.proxyCloses[k], k)
		}
	}
	for _, k := range sortedKeys(s.proxyEvictions) {
		p("  evictions %s: %.0f", k, s.proxyEvictions[k])
	}
	if s.haveBaseline {
		p("resources      baseline: %s", s.baseline)
		p("               max:      %s, connections %d, queued %s", s.peak, s.peak.conns, sizeString(s.peak.queued))
		if s.haveAfter {
			gc, hm := "after a forced GC", int64(heapMargin)
			if s.target.pprof == "" {
				gc, hm = "no GC forced", heapMarginNoGC
			}
			p("               after:    %s (%s; allowed: goroutines +%d, fds +%d, heap +%s)", s.after, gc,
				goroutineMargin, fdMargin, sizeString(hm))
		}
	}
	byKind := map[string]int{}
	for _, f := range failures {
		byKind[f.kind.String()]++
	}
	if len(failures) == 0 {
		p("RESULT         PASS")
		return true
	}
	var parts []string
	for _, k := range sortedKeys(byKind) {
		parts = append(parts, fmt.Sprintf("%s %d", k, byKind[k]))
	}
	p("RESULT         FAIL: %d failures (%s); all listed in %s/failures.txt", len(failures), strings.Join(parts, ", "), s.cfg.outDir)
	return false
}

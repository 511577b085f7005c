package config

import (
	"bufio"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// fallbackMemory is assumed when the machine's memory cannot be read.
const fallbackMemory = 1 << 30

// DefaultMemoryLimit is --memory-limit's default: GOMEMLIMIT if it is set,
// else half of the memory the process may use: the container's limit (cgroup
// v2 memory.max or v1 memory.limit_in_bytes) or, without one, the machine's
// (MemTotal).
func DefaultMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		if l := debug.SetMemoryLimit(-1); l > 0 && l < 1<<62 {
			return l
		}
	}
	return availableMemory() / 2
}

func availableMemory() int64 {
	total := memTotal()
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(p); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && n < total {
				total = n
			}
		}
	}
	return total
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return fallbackMemory
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       24567896 kB
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil && kb > 0 {
				return kb << 10
			}
		}
	}
	return fallbackMemory
}

// autoSize is a size flag whose default (-1) is worked out at parse time;
// --help shows it as "auto".
type autoSize int64

func (s *autoSize) String() string {
	if *s < 0 {
		return "auto"
	}
	return FormatSize(int64(*s))
}

func (s *autoSize) Set(v string) error {
	if v == "auto" {
		*s = -1
		return nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = autoSize(n)
	return nil
}

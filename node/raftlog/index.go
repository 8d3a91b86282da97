package raftlog

// loc is where an entry lives: its segment and the byte range of the whole
// entry (prefix included).
type loc struct {
	seg *segment
	off int64
	n   uint32
}

// run is a contiguous range of live entries starting at first.
type run struct {
	first uint64
	locs  []loc
}

func (r run) last() uint64 { return r.first + uint64(len(r.locs)) - 1 }

// index maps live Raft indexes to their place on disk. Entries form
// contiguous runs; there is more than one run only after a batch did not
// follow the last index (a snapshot install leaves a gap).
type index struct{ runs []run }

func (x *index) empty() bool { return len(x.runs) == 0 }

func (x *index) first() uint64 {
	if x.empty() {
		return 0
	}
	return x.runs[0].first
}

func (x *index) last() uint64 {
	if x.empty() {
		return 0
	}
	return x.runs[len(x.runs)-1].last()
}

func (x *index) get(i uint64) (loc, bool) {
	lo, hi := 0, len(x.runs)
	for lo < hi {
		m := (lo + hi) / 2
		switch r := x.runs[m]; {
		case i < r.first:
			hi = m
		case i > r.last():
			lo = m + 1
		default:
			return r.locs[i-r.first], true
		}
	}
	return loc{}, false
}

// append adds entries first.. at locs; first must be above last().
func (x *index) append(first uint64, locs []loc) {
	if n := len(x.runs); n > 0 && x.runs[n-1].last()+1 == first {
		x.runs[n-1].locs = append(x.runs[n-1].locs, locs...)
		return
	}
	x.runs = append(x.runs, run{first: first, locs: locs})
}

// truncateFrom drops entries >= i.
func (x *index) truncateFrom(i uint64) {
	for len(x.runs) > 0 {
		r := &x.runs[len(x.runs)-1]
		switch {
		case r.first >= i:
			x.runs = x.runs[:len(x.runs)-1]
			continue
		case r.last() >= i:
			r.locs = r.locs[:i-r.first]
		}
		return
	}
}

// dropBefore drops entries < i.
func (x *index) dropBefore(i uint64) {
	for len(x.runs) > 0 {
		r := &x.runs[0]
		switch {
		case r.last() < i:
			x.runs = x.runs[1:]
			continue
		case r.first < i:
			r.locs = r.locs[i-r.first:]
			r.first = i
		}
		return
	}
}

package storebackup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
)

// The bbolt file format (go.etcd.io/bbolt, internal/common), as far as
// checkPages reads it.
const (
	pageHeaderSize  = 16 // id uint64, flags uint16, count uint16, overflow uint32
	elementSize     = 16 // branch: pos, ksize uint32, pgid uint64; leaf: flags, pos, ksize, vsize uint32
	bucketHeaderLen = 16 // root pgid uint64, sequence uint64
	metaSize        = 64 // magic, version, pageSize, flags uint32; root, seq, freelist, pgid, txid, checksum uint64
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	branchPage      = 0x01
	leafPage        = 0x02
	bucketLeafFlag  = 0x01
	defaultPageSize = 4096
)

// checkPages checks, in plain Go over the file's bytes, that the B+trees
// bbolt will walk are trees: from the meta page bbolt would use, every page
// reached (the root bucket, each table's, branches and leaves) lies within
// the file and below the database's high-water mark, carries its own page
// number, is a branch or leaf page whose elements, keys and values lie
// within it, and is reached once. bbolt itself trusts all of that: a page
// that refers back to one above it makes its cursors loop forever.
func checkPages(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	m, err := readMeta(b)
	if err != nil {
		return err
	}
	c := &pageChecker{b: b, pageSize: uint64(m.pageSize), highWater: m.pgid, seen: map[uint64]bool{}}
	return c.tree(m.root)
}

type meta struct {
	pageSize uint32
	root     uint64 // the root bucket's page
	pgid     uint64 // the high-water mark: no page at or past it is in use
	txid     uint64
}

// readMeta returns the meta page bbolt would use: of the two, the valid one
// with the higher transaction ID.
func readMeta(b []byte) (*meta, error) {
	parse := func(off int) (*meta, error) {
		if off+pageHeaderSize+metaSize > len(b) {
			return nil, errors.New("file too short for a meta page")
		}
		p := b[off+pageHeaderSize : off+pageHeaderSize+metaSize]
		le := binary.LittleEndian
		h := fnv.New64a()
		h.Write(p[:56])
		switch {
		case le.Uint32(p[0:]) != boltMagic:
			return nil, errors.New("no bbolt magic number")
		case le.Uint32(p[4:]) != boltVersion:
			return nil, fmt.Errorf("bbolt format version %d, want %d", le.Uint32(p[4:]), boltVersion)
		case le.Uint64(p[56:]) != h.Sum64():
			return nil, errors.New("meta page checksum mismatch")
		}
		m := &meta{pageSize: le.Uint32(p[8:]), root: le.Uint64(p[16:]), pgid: le.Uint64(p[40:]), txid: le.Uint64(p[48:])}
		if m.pageSize < 1024 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
			return nil, fmt.Errorf("page size %d", m.pageSize)
		}
		return m, nil
	}
	m0, err0 := parse(0)
	size := defaultPageSize
	if m0 != nil {
		size = int(m0.pageSize)
	}
	m1, err1 := parse(size)
	switch {
	case m0 == nil && m1 == nil:
		return nil, fmt.Errorf("no valid meta page: %v; %v", err0, err1)
	case m1 == nil || m0 != nil && m0.txid >= m1.txid:
		return m0, nil
	}
	return m1, nil
}

type pageChecker struct {
	b         []byte
	pageSize  uint64
	highWater uint64
	seen      map[uint64]bool
}

// tree checks the tree whose root page is root, and every bucket below.
func (c *pageChecker) tree(root uint64) error {
	stack := []uint64{root}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		page, err := c.page(id)
		if err != nil {
			return err
		}
		children, err := c.elements(page, fmt.Sprintf("page %d", id))
		if err != nil {
			return err
		}
		stack = append(stack, children...)
	}
	return nil
}

// page returns page id's bytes, overflow pages included, once.
func (c *pageChecker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= c.highWater {
		return nil, fmt.Errorf("page %d: outside the database (pages 2 to %d)", id, c.highWater-1)
	}
	start := id * c.pageSize
	if start/c.pageSize != id || start+pageHeaderSize > uint64(len(c.b)) {
		return nil, fmt.Errorf("page %d: past the end of the file", id)
	}
	le := binary.LittleEndian
	if got := le.Uint64(c.b[start:]); got != id {
		return nil, fmt.Errorf("page %d: carries page number %d", id, got)
	}
	overflow := uint64(le.Uint32(c.b[start+12:]))
	end := start + (1+overflow)*c.pageSize
	if id+overflow >= c.highWater || end > uint64(len(c.b)) {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the database", id, overflow)
	}
	for p := id; p <= id+overflow; p++ {
		if c.seen[p] {
			return nil, fmt.Errorf("page %d: reached twice (a loop in the tree, or two trees sharing it)", p)
		}
		c.seen[p] = true
	}
	return c.b[start:end], nil
}

// elements checks a branch or leaf page's elements (page: its bytes,
// header first), and returns the pages it refers to: a branch's children,
// the root pages of the buckets a leaf holds. Inline buckets (a bucket's
// leaf page inside its value) are checked at once.
func (c *pageChecker) elements(page []byte, where string) ([]uint64, error) {
	le := binary.LittleEndian
	flags, count := le.Uint16(page[8:]), int(le.Uint16(page[10:]))
	if flags != branchPage && flags != leafPage {
		return nil, fmt.Errorf("%s: flags %#x: not a branch or leaf page", where, flags)
	}
	if flags == branchPage && count == 0 {
		return nil, fmt.Errorf("%s: a branch page without elements", where)
	}
	if pageHeaderSize+count*elementSize > len(page) {
		return nil, fmt.Errorf("%s: %d elements do not fit in it", where, count)
	}
	var refs []uint64
	for i := range count {
		off := pageHeaderSize + i*elementSize
		e := page[off : off+elementSize]
		if flags == branchPage {
			pos, ksize := uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
			if uint64(off)+pos+ksize > uint64(len(page)) {
				return nil, fmt.Errorf("%s: element %d: key past the page", where, i)
			}
			refs = append(refs, le.Uint64(e[8:]))
			continue
		}
		eflags, pos, ksize, vsize := le.Uint32(e[0:]), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		vstart := uint64(off) + pos + ksize
		if vstart+vsize > uint64(len(page)) {
			return nil, fmt.Errorf("%s: element %d: key or value past the page", where, i)
		}
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		v := page[vstart : vstart+vsize]
		if len(v) < bucketHeaderLen {
			return nil, fmt.Errorf("%s: element %d: a bucket value of %d bytes", where, i, len(v))
		}
		if root := le.Uint64(v); root != 0 {
			refs = append(refs, root)
			continue
		}
		inline := v[bucketHeaderLen:]
		if len(inline) < pageHeaderSize || le.Uint16(inline[8:]) != leafPage {
			return nil, fmt.Errorf("%s: element %d: an inline bucket without its leaf page", where, i)
		}
		more, err := c.elements(inline, fmt.Sprintf("%s, inline bucket %d", where, i))
		if err != nil {
			return nil, err
		}
		refs = append(refs, more...)
	}
	return refs, nil
}

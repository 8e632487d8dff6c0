package krl

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// Marshal encodes k. The output is canonical and deterministic: one
// certificates section per CA (the wildcard first, then by CA key
// encoding), then explicit keys, SHA1 and SHA256 fingerprints, each sorted
// and without duplicates; empty sections are left out. Serials are written
// in the fewest bytes (see the package documentation), bitmaps at most
// MaxBitmapBits wide. Marshal refuses a KRL with Signatures, an explicit
// key that is a certificate, a NUL in the comment or a key ID, and output
// over MaxSize.
func (k *KRL) Marshal() ([]byte, error) {
	if len(k.Signatures) > 0 {
		return nil, errors.New("krl: Marshal writes no signature sections (OpenSSH 9.4 and later refuse them); clear Signatures")
	}
	if strings.IndexByte(k.Comment, 0) >= 0 {
		return nil, errors.New("krl: comment has a NUL byte")
	}
	certs, err := mergeCerts(k.Certs)
	if err != nil {
		return nil, err
	}
	keys := make([][]byte, 0, len(k.RevokedKeys))
	for i, key := range k.RevokedKeys {
		if _, ok := key.(*ssh.Certificate); ok {
			return nil, fmt.Errorf("krl: revoked key %d is a certificate: revoke its serial, or its Key", i+1)
		}
		keys = append(keys, key.Marshal())
	}
	var generated uint64
	if !k.Generated.IsZero() {
		generated = uint64(k.Generated.Unix())
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 1024))
	b.AddBytes([]byte(magic))
	b.AddUint32(1)
	b.AddUint64(k.Version)
	b.AddUint64(generated)
	b.AddUint64(k.Flags)
	addString(b, nil)
	addString(b, []byte(k.Comment))
	for _, s := range certs {
		b.AddUint8(sectionCerts)
		b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
			if s.CA != nil {
				addString(b, s.CA.Marshal())
			} else {
				addString(b, nil)
			}
			addString(b, nil)
			addSerials(b, s.Serials.r)
			if len(s.KeyIDs) > 0 {
				addStrings(b, subKeyID, s.KeyIDs)
			}
		})
	}
	addStrings(b, sectionKeys, sortedUnique(keys))
	addStrings(b, sectionSHA1, sortedUnique(hashSlices(k.SHA1, func(h *[20]byte) []byte { return h[:] })))
	addStrings(b, sectionSHA256, sortedUnique(hashSlices(k.SHA256, func(h *[32]byte) []byte { return h[:] })))
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("krl: %w", err)
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("krl: %d bytes, more than the %d OpenSSH loads", len(out), MaxSize)
	}
	return out, nil
}

// mergeCerts returns one non-empty section per CA, the wildcard first, then
// by CA encoding, with sorted unique key IDs.
func mergeCerts(in []*CertSection) ([]*CertSection, error) {
	byCA := map[string]*CertSection{}
	var out []*CertSection
	for _, s := range in {
		var blob string
		if s.CA != nil {
			blob = string(s.CA.Marshal())
		}
		m := byCA[blob]
		if m == nil {
			m = &CertSection{CA: s.CA}
			byCA[blob] = m
			out = append(out, m)
		}
		if err := m.Serials.AddAll(s.Serials.r); err != nil {
			return nil, err
		}
		for _, id := range s.KeyIDs {
			if strings.IndexByte(id, 0) >= 0 {
				return nil, fmt.Errorf("krl: key ID %q has a NUL byte", id)
			}
		}
		m.KeyIDs = append(m.KeyIDs, s.KeyIDs...)
	}
	out = slices.DeleteFunc(out, func(s *CertSection) bool {
		slices.Sort(s.KeyIDs)
		s.KeyIDs = slices.Compact(s.KeyIDs)
		return s.Serials.Len() == 0 && len(s.KeyIDs) == 0
	})
	slices.SortFunc(out, func(a, b *CertSection) int { return bytes.Compare(caBlob(a.CA), caBlob(b.CA)) })
	return out, nil
}

func caBlob(k ssh.PublicKey) []byte {
	if k == nil {
		return nil
	}
	return k.Marshal()
}

func addString(b *cryptobyte.Builder, s []byte) {
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s) })
}

// addStrings adds a (sub)section of type typ holding strings, if any.
func addStrings[S ~string | ~[]byte](b *cryptobyte.Builder, typ byte, strs []S) {
	if len(strs) == 0 {
		return
	}
	b.AddUint8(typ)
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, s := range strs {
			addString(b, []byte(s))
		}
	})
}

func hashSlices[H any](hs []H, slice func(*H) []byte) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = slice(&hs[i])
	}
	return out
}

func sortedUnique(bs [][]byte) [][]byte {
	slices.SortFunc(bs, bytes.Compare)
	return slices.CompactFunc(bs, bytes.Equal)
}

// Sizes in bytes of the serial subsections, type byte and length included.
const (
	listHeader   = 1 + 4      // then 8 per serial
	rangeSize    = 1 + 4 + 16 // one range per subsection
	bitmapHeader = 1 + 4 + 8 + 4 + 1
	// a bitmap spanning s serials takes bitmapHeader + s/8 bytes: its
	// mpint has s/8+1 bytes (a leading zero when the top bit is a byte's
	// most significant bit).
)

type encoding uint8

const (
	encRange encoding = iota + 1
	encList
	encBitmap
)

// step is how the runs ending at one run are encoded: as a range, a list
// entry, or a bitmap from run start on; prevList says whether the prefix
// before used a list (the list subsection header is paid once).
type step struct {
	start    int32
	enc      encoding
	prevList bool
}

// planSerials chooses, for sorted disjoint runs, the smallest encoding:
// each run alone as a range or list entries (all list entries go in one
// subsection), or consecutive runs spanning at most MaxBitmapBits serials
// as one bitmap. It is a shortest path over run boundaries with two states
// (a list subsection started or not); the bitmap candidates are kept in a
// sliding-window minimum per start residue mod 8, so it runs in O(8n).
// Splitting a run between subsections never helps: a range costs the same
// whatever its length, and a bitmap's cost depends on its span only.
func planSerials(runs []SerialRange) (list []SerialRange, subs []step, ends []int) {
	n := len(runs)
	if n == 0 {
		return nil, nil, nil
	}
	const inf = int64(1) << 62
	type cand struct {
		j int   // first run of the bitmap
		g int64 // cost before run j, minus First(j)/8
	}
	var (
		cost  = [2]int64{0, inf} // [list started?] cost of runs[:i]
		steps = [2][]step{make([]step, n+1), make([]step, n+1)}
		win   [2][8][]cand // bitmap starts still within reach, per state and First%8
		head  [2][8]int
	)
	for i, r := range runs {
		length := r.Last - r.First + 1
		if length <= MaxBitmapBits {
			for u := range 2 {
				if cost[u] >= inf {
					continue
				}
				c := cand{i, cost[u] - int64(r.First>>3)}
				q := &win[u][r.First&7]
				for len(*q) > head[u][r.First&7] && (*q)[len(*q)-1].g >= c.g {
					*q = (*q)[:len(*q)-1]
				}
				*q = append(*q, c)
			}
		}
		var next [2]int64
		for u := range 2 {
			next[u] = cost[u] + rangeSize
			steps[u][i+1] = step{start: int32(i), enc: encRange, prevList: u == 1}
			// Bitmaps from a start within MaxBitmapBits of r.Last.
			hi := r.Last
			for res := range uint64(8) {
				q := win[u][res]
				h := head[u][res]
				for h < len(q) && hi >= MaxBitmapBits-1 && runs[q[h].j].First < hi-(MaxBitmapBits-1) {
					h++
				}
				head[u][res] = h
				if h == len(q) {
					continue
				}
				// floor((hi-lo+1)/8) = hi/8 - lo/8 + adj
				d := int64(hi&7) - int64(res) + 1
				adj := int64(0)
				if d == 8 {
					adj = 1
				} else if d < 0 {
					adj = -1
				}
				if c := q[h].g + int64(hi>>3) + adj + bitmapHeader; c < next[u] {
					next[u] = c
					steps[u][i+1] = step{start: int32(q[h].j), enc: encBitmap, prevList: u == 1}
				}
			}
		}
		if length <= 2 {
			entries := 8 * int64(length)
			for pu := range 2 {
				c := cost[pu] + entries
				if pu == 0 {
					c += listHeader
				}
				if c < next[1] {
					next[1] = c
					steps[1][i+1] = step{start: int32(i), enc: encList, prevList: pu == 1}
				}
			}
		}
		cost = next
	}
	u := 0
	if cost[1] < cost[0] {
		u = 1
	}
	for i := n; i > 0; {
		s := steps[u][i]
		switch s.enc {
		case encList:
			list = append(list, runs[i-1])
			if !s.prevList {
				u = 0
			}
		default:
			subs = append(subs, s)
			ends = append(ends, i-1)
		}
		i = int(s.start)
	}
	slices.Reverse(list)
	slices.Reverse(subs)
	slices.Reverse(ends)
	return list, subs, ends
}

// addSerials writes the serial subsections for runs: the list first, then
// ranges and bitmaps in ascending order.
func addSerials(b *cryptobyte.Builder, runs []SerialRange) {
	list, subs, ends := planSerials(runs)
	if len(list) > 0 {
		b.AddUint8(subList)
		b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, r := range list {
				for s := r.First; ; s++ {
					b.AddUint64(s)
					if s == r.Last {
						break
					}
				}
			}
		})
	}
	for i, s := range subs {
		group := runs[s.start : ends[i]+1]
		if s.enc == encRange {
			b.AddUint8(subRange)
			b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint64(group[0].First)
				b.AddUint64(group[0].Last)
			})
			continue
		}
		b.AddUint8(subBitmap)
		b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint64(group[0].First)
			addString(b, bitmapBytes(group))
		})
	}
}

// bitmapBytes is the mpint (without its length) for runs, relative to the
// first run's start.
func bitmapBytes(group []SerialRange) []byte {
	base := group[0].First
	span := group[len(group)-1].Last - base + 1
	buf := make([]byte, span/8+1)
	for _, r := range group {
		for k := r.First - base; k <= r.Last-base; k++ {
			buf[len(buf)-1-int(k/8)] |= 1 << (k % 8)
		}
	}
	return buf
}

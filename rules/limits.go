package rules

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Limits of the policy reader (see the package documentation, "Limits").
// They are checked while the file is read and scanned, before the YAML
// tree, the Policy or the Ruleset is built, so that a hostile or mistaken
// policy costs bounded time and memory in `otgw check` and on reload:
// a file past them is refused in well under a second and about 15 MB
// (a 100 MB file: 0.04 s, 15 MB RSS), and the largest file within them
// (200,000 values) checks in about a second and 100 MB. A policy that
// breaks one is refused with FILE:LINE:COL naming where.
const (
	// MaxPolicyBytes is the largest policy file read (4 MiB).
	MaxPolicyBytes = 4 << 20
	// MaxPolicyValues bounds the YAML values (scalars, lists, mappings and
	// their keys) of one file; each costs about 200 bytes as a YAML
	// node and about 400 bytes of peak RSS through Compile.
	MaxPolicyValues = 200_000
	// MaxListLen bounds the entries of one list or mapping (units,
	// networks, nodes, assets, conduits, allow entries...).
	MaxListLen = 10_000
	// MaxRanges bounds the comma-separated ranges of one value, such as
	// a Modbus "read: holding 0-9, 20-29".
	MaxRanges = 1_000
	// MaxPolicyDepth bounds the nesting of lists and mappings.
	MaxPolicyDepth = 64
)

// ReadPolicy reads the policy file at path, at most MaxPolicyBytes of it:
// a longer file is a Problem at the line the limit falls on, and the rest
// is not read. Load and the daemon's reload path both read through it.
func ReadPolicy(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	if size > MaxPolicyBytes {
		// Read only up to the limit, to name the line it falls on.
		head := make([]byte, MaxPolicyBytes)
		n, _ := io.ReadFull(f, head)
		return nil, tooBig(path, head[:n], size)
	}
	var buf bytes.Buffer
	if size >= 0 {
		buf.Grow(int(size) + 1024) // one allocation for a regular file
	}
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxPolicyBytes+1)); err != nil {
		return nil, fmt.Errorf("rules: %s: %w", path, err)
	}
	data := buf.Bytes()
	if len(data) > MaxPolicyBytes {
		return nil, tooBig(path, data[:MaxPolicyBytes], -1)
	}
	return data, nil
}

// tooBig reports a file longer than MaxPolicyBytes at the position of
// its last byte within the limit; head is the file up to the limit.
func tooBig(name string, head []byte, size int64) error {
	line, col := lineCol(head, len(head))
	what := "more than"
	if size >= 0 {
		what = fmt.Sprintf("%d bytes, more than", size)
	}
	return Problems{{File: name, Line: line, Col: col,
		Msg: fmt.Sprintf("policy file is %s the limit of %d bytes (4 MiB); the limit falls on this line", what, MaxPolicyBytes)}}
}

// lineCol returns the 1-based line and column (in characters, as yaml.v3
// counts them) of byte offset off in data.
func lineCol(data []byte, off int) (int, int) {
	line, start := 1, 0
	for i := 0; i < off && i < len(data); i++ {
		if data[i] == '\n' {
			line, start = line+1, i+1
		}
	}
	return line, utf8.RuneCount(data[start:min(off, len(data))]) + 1
}

// scanColl is one open list or mapping during prescan.
type scanColl struct {
	flow   bool // [..] or {..}; else a block collection
	seq    bool // a list; else a mapping
	indent int  // block: column of its entries
	n      int  // entries so far
	expect bool // flow: the next token starts an entry
}

// prescan walks the YAML text once, with memory bounded by MaxPolicyDepth, and
// refuses a file whose lists or mappings have more than MaxListLen
// entries, whose values number more than MaxPolicyValues, or whose nesting is
// deeper than MaxPolicyDepth, naming the entry that crosses the limit. It reads
// only the structure: comments, quoted scalars, block scalars and flow
// collections; Parse reports every other problem. Its count of values is
// an upper bound (every YAML value except the root is a flow entry, a
// block list entry or one side of a key: value pair), so the YAML tree
// that is built afterwards is bounded whatever the scan misreads.
func prescan(name string, data []byte) error {
	s := scanner{name: name, data: data, line: 1}
	if err := s.run(); err != nil {
		return err
	}
	if at := indicators(data); at >= 0 {
		line, col := lineCol(data, at)
		return Problems{{File: name, Line: line, Col: col,
			Msg: fmt.Sprintf("policy has more than %d list entries, keys and separators (the limit)", 2*MaxPolicyValues)}}
	}
	return nil
}

type scanner struct {
	name      string
	data      []byte
	line      int // 1-based, of the line being scanned
	lineStart int
	stack     []scanColl
	nodes     int
	quote     byte // ' or " while inside a quoted scalar (may span lines)
	last      byte // last significant character outside quotes (kept across lines in flow)
	blockText int  // >= 0: inside a block scalar; lines indented more are text
}

func (s *scanner) fail(at int, format string, args ...any) error {
	_, col := lineCol(s.data[s.lineStart:], at-s.lineStart)
	return Problems{{File: s.name, Line: s.line, Col: col, Msg: fmt.Sprintf(format, args...)}}
}

func (s *scanner) run() error {
	s.blockText = -1
	for pos := 0; pos < len(s.data); s.line++ {
		end := pos
		for end < len(s.data) && s.data[end] != '\n' {
			end++
		}
		s.lineStart = pos
		if err := s.scanLine(pos, end); err != nil {
			return err
		}
		pos = end + 1
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

func (s *scanner) flowDepth() bool { return len(s.stack) > 0 && s.stack[len(s.stack)-1].flow }

func (s *scanner) scanLine(start, end int) error {
	d := s.data
	i := start
	for i < end && d[i] == ' ' {
		i++
	}
	indent := i - start
	blank := len(bytes.TrimSpace(d[i:end])) == 0 || d[i] == '#'
	if s.blockText >= 0 {
		if blank || indent > s.blockText {
			return nil
		}
		s.blockText = -1
	}
	if blank && s.quote == 0 {
		return nil
	}
	if s.quote == 0 && !s.flowDepth() {
		var err error
		if i, err = s.blockEntries(i, end); err != nil {
			return err
		}
	}
	return s.tokens(i, end, indent)
}

// blockEntries counts the block list entries ("- ") and mapping keys
// that start at i, and returns where the rest of the line starts.
func (s *scanner) blockEntries(i, end int) (int, error) {
	d := s.data
	for i < end {
		col := i - s.lineStart
		s.popDeeper(col)
		switch {
		case d[i] == '-' && (i+1 == end || isSpace(d[i+1])):
			if err := s.entry(i, col, true, 1); err != nil {
				return i, err
			}
			i++
			for i < end && isSpace(d[i]) {
				i++
			}
			continue // "- - x", "- key: v": more on this line
		case d[i] == '?' && (i+1 == end || isSpace(d[i+1])):
			if err := s.entry(i, col, false, 2); err != nil {
				return i, err
			}
			return i + 1, nil
		case hasMappingColon(d[i:end]):
			if err := s.entry(i, col, false, 2); err != nil {
				return i, err
			}
		}
		return i, nil
	}
	return i, nil
}

// popDeeper closes the block collections that a line starting at col
// ends.
func (s *scanner) popDeeper(col int) {
	for len(s.stack) > 0 {
		top := s.stack[len(s.stack)-1]
		if top.flow || top.indent <= col {
			return
		}
		s.stack = s.stack[:len(s.stack)-1]
	}
}

// entry counts one block entry (of a list when seq) at column col.
func (s *scanner) entry(at, col int, seq bool, values int) error {
	if n := len(s.stack); n > 0 && !seq {
		// A key at the column of a list's dashes ends that list: it was
		// the value of the previous key ("key:\n- a\n- b\nnext: ...").
		if top := s.stack[n-1]; top.seq && !top.flow && top.indent == col {
			s.stack = s.stack[:n-1]
		}
	}
	if n := len(s.stack); n > 0 {
		if top := &s.stack[n-1]; !top.flow && top.indent == col && top.seq == seq {
			return s.count(at, top, values)
		}
	}
	if err := s.push(at, scanColl{seq: seq, indent: col}); err != nil {
		return err
	}
	return s.count(at, &s.stack[len(s.stack)-1], values)
}

func (s *scanner) push(at int, c scanColl) error {
	if len(s.stack) >= MaxPolicyDepth {
		return s.fail(at, "lists and mappings nested deeper than %d (the limit)", MaxPolicyDepth)
	}
	s.stack = append(s.stack, c)
	s.nodes++
	return nil
}

func (s *scanner) count(at int, c *scanColl, values int) error {
	c.n++
	s.nodes += values
	if c.n > MaxListLen {
		what := "mapping"
		if c.seq {
			what = "list"
		}
		return s.fail(at, "%s has more than %d entries (the limit)", what, MaxListLen)
	}
	if s.nodes > MaxPolicyValues {
		return s.fail(at, "policy has more than %d values (the limit)", MaxPolicyValues)
	}
	return nil
}

// hasMappingColon reports whether a block line holds "key:" followed by
// a space or the end of the line, outside quotes and comments.
func hasMappingColon(b []byte) bool {
	var q byte
	for i, c := range b {
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '#' && (i == 0 || isSpace(b[i-1])):
			return false
		case (c == '\'' || c == '"') && (i == 0 || isSpace(b[i-1])):
			q = c
		case c == ':' && (i+1 == len(b) || isSpace(b[i+1])):
			return true
		}
	}
	return false
}

// tokens scans the rest of a line for quoted scalars, flow collections
// and their entries, comments and block scalar indicators. A quote or a
// bracket opens a scalar or a collection only where a node starts (after
// a key's colon, a dash, an opening bracket or a comma), as in YAML: a
// quote inside a plain scalar is text.
func (s *scanner) tokens(i, end, indent int) error {
	d := s.data
	if !s.flowDepth() {
		s.last = 0 // a block line: its first token starts a node
	}
	for ; i < end; i++ {
		c := d[i]
		if s.quote != 0 {
			switch {
			case s.quote == '"' && c == '\\':
				i++
			case c == s.quote:
				if c == '\'' && i+1 < end && d[i+1] == '\'' {
					i++ // '' inside single quotes
					continue
				}
				s.quote = 0
				s.last = c
			}
			continue
		}
		if isSpace(c) {
			continue
		}
		if c == '#' && (i == s.lineStart || isSpace(d[i-1])) {
			break
		}
		nodeStart := s.last == 0 || strings.IndexByte(":[{,?-", s.last) >= 0
		if s.flowDepth() && c != ']' && c != '}' && c != ',' {
			top := &s.stack[len(s.stack)-1]
			if top.expect {
				top.expect = false
				if err := s.count(i, top, 1); err != nil {
					return err
				}
			}
		}
		switch c {
		case '\'', '"':
			if nodeStart {
				s.quote = c
			}
		case '[', '{':
			if nodeStart {
				if err := s.push(i, scanColl{flow: true, seq: c == '[', expect: true}); err != nil {
					return err
				}
			}
		case ']', '}':
			if s.flowDepth() {
				s.stack = s.stack[:len(s.stack)-1]
			}
		case ',':
			if s.flowDepth() {
				s.stack[len(s.stack)-1].expect = true
			}
		case ':':
			if s.flowDepth() && (i+1 == end || isSpace(d[i+1]) || strings.IndexByte(",]}", d[i+1]) >= 0) {
				s.nodes++ // the value of a key: value pair in a flow collection
			}
		}
		s.last = c
		if (c == '|' || c == '>') && nodeStart && !s.flowDepth() {
			// A block scalar when only indicators or a comment follow.
			j := i + 1
			for j < end && strings.IndexByte("+-0123456789", d[j]) >= 0 {
				j++
			}
			if rest := bytes.TrimSpace(d[j:end]); len(rest) == 0 || rest[0] == '#' {
				// Its text is every following line indented more than
				// the collection that holds it.
				s.blockText = indent
				if n := len(s.stack); n > 0 {
					s.blockText = s.stack[n-1].indent
				}
				return nil
			}
		}
	}
	return nil
}

// indicators counts, in one pass that ignores quotes, comments and block
// scalars, every character that can introduce a YAML node: ',', '[', '{',
// ':' and the dashes and '?' that open a line. Each introduces at most two
// nodes (a key and its value, a collection and its first entry), so this
// bounds the tree yaml.v3 builds whatever prescan's reading of the text;
// it overcounts colons in addresses and commas in comments, hence its
// limit of twice MaxPolicyValues. It returns the offset where the count passes
// the limit, or -1.
func indicators(d []byte) int {
	n, lead := 0, true
	for i, c := range d {
		switch c {
		case '\n':
			lead = true
			continue
		case ' ', '\t':
			continue
		case ',', '[', '{', ':':
			n++
		case '-', '?':
			if lead && (i+1 == len(d) || d[i+1] == ' ' || d[i+1] == '\n' || d[i+1] == '\r') {
				n++
				continue // "- - x": still the lead of the line
			}
		}
		lead = false
		if n > 2*MaxPolicyValues {
			return i
		}
	}
	return -1
}

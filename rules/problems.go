package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every Problems error: the policy is
// wrong, as opposed to unreadable.
var ErrInvalid = errors.New("rules: invalid policy")

// Problem is one thing wrong with a policy, at a 1-based line and column
// (0 when the policy was built in code rather than read from a file).
type Problem struct {
	File      string
	Line, Col int
	Msg       string
}

// String formats the problem as FILE:LINE:COL: message.
func (p Problem) String() string {
	file := p.File
	if file == "" {
		file = "policy"
	}
	if p.Line == 0 {
		return file + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, p.Line, p.Col, p.Msg)
}

// Problems is every problem found in one run, in file order. As an error it
// prints one problem per line and matches ErrInvalid.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalid.
func (ps Problems) Is(target error) bool { return target == ErrInvalid }

// sorted orders by position, drops exact duplicates, and returns nil for none.
func (ps Problems) sorted() error {
	if len(ps) == 0 {
		return nil
	}
	out := append(Problems(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Col < out[j].Col
	})
	k := 0
	for i := range out {
		if k > 0 && out[i] == out[k-1] {
			continue
		}
		out[k] = out[i]
		k++
	}
	return out[:k]
}

// Merge combines problem lists from Load and Compile into one sorted error
// (nil when there are none). Errors that are not Problems are kept as a
// problem without position.
func Merge(errs ...error) error {
	var all Problems
	for _, err := range errs {
		if err == nil {
			continue
		}
		var ps Problems
		if errors.As(err, &ps) {
			all = append(all, ps...)
		} else {
			all = append(all, Problem{Msg: err.Error()})
		}
	}
	return all.sorted()
}

// suggest returns `; did you mean "x"?` for the closest candidate, if close.
func suggest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(s) > 8 {
		limit = 3
	}
	if best == "" || bestD > limit || bestD >= len(s) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

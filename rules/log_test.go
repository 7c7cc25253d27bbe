package rules

import (
	"strings"
	"testing"
)

const logPolicy = `version: 1
name: log
zones:
  a: { port: north, networks: [192.0.2.128/25] }
  b: { port: south, networks: [192.0.2.0/25] }
conduits:
  - name: quiet
    from: a
    to: b
    rules:
      - modbus: { allow: [ { read: holding 0-9 } ] }
  - name: logged
    from: a
    to: b
    log: %s
    rules:
      - modbus: { allow: [ { read: holding 0-9 } ] }
`

// log: transactions (a value or a list) marks the conduit; Marshal keeps
// it; LogTransactions answers per conduit index and never panics.
func TestLogTransactions(t *testing.T) {
	for _, v := range []string{"transactions", "[transactions]"} {
		t.Run(v, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(strings.Replace(logPolicy, "%s", v, 1)))
			if err != nil {
				t.Fatal(err)
			}
			rs, err := Compile(p)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range []bool{false, true} {
				if got := rs.LogTransactions(i); got != want {
					t.Errorf("LogTransactions(%d) = %v, want %v", i, got, want)
				}
			}
			if rs.LogTransactions(-1) || rs.LogTransactions(2) {
				t.Error("LogTransactions out of range = true")
			}
			y, err := Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(y), "log: transactions") {
				t.Errorf("Marshal lost the log key:\n%s", y)
			}
			back, err := Parse("back.yaml", y)
			if err != nil || len(back.Conduits) != 2 || strings.Join(back.Conduits[1].Log, ",") != "transactions" {
				t.Errorf("round trip: %v %+v", err, back)
			}
		})
	}
}

// An unknown log value names the file, line and the value it meant.
func TestLogUnknownValue(t *testing.T) {
	p, err := Parse("p.yaml", []byte(strings.Replace(logPolicy, "%s", "transaction", 1)))
	if err == nil {
		_, err = Compile(p)
	}
	if err == nil || !strings.Contains(err.Error(), `unknown log value "transaction"`) || !strings.Contains(err.Error(), "p.yaml:15:10") ||
		!strings.Contains(err.Error(), "transactions") {
		t.Errorf("got %v, want p.yaml:15:10 unknown log value with a suggestion", err)
	}
}

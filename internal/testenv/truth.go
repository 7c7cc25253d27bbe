package testenv

import (
	"encoding/csv"
	"os"
	"strconv"
	"testing"
)

// TruthRow is one row of a tshark ground-truth CSV (../shared/pcaps/*.truth.csv),
// keyed by column name; see the README there for the columns.
type TruthRow map[string]string

// Int returns the named column as an int (0 when empty or not a number).
func (r TruthRow) Int(col string) int {
	n, _ := strconv.Atoi(r[col])
	return n
}

// ReadTruth loads the rows of the truth CSV at path whose protocol column
// is proto ("" for every row), failing the test on a missing or malformed file.
func ReadTruth(t testing.TB, path, proto string) []TruthRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(recs) == 0 {
		t.Fatalf("%s: empty", path)
	}
	var rows []TruthRow
	for _, r := range recs[1:] {
		row := make(TruthRow, len(recs[0]))
		for i, h := range recs[0] {
			if i < len(r) {
				row[h] = r[i]
			}
		}
		if proto != "" && row["protocol"] != proto {
			continue
		}
		if _, err := strconv.Atoi(row["frame"]); err != nil {
			t.Fatalf("%s: bad frame %q", path, row["frame"])
		}
		rows = append(rows, row)
	}
	return rows
}

package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// learned builds a policy shaped like a learned one (one conduit per
// client/server pair: hmis HMIs spread over north zones, plcs PLCs over
// south zones, the last PLC in an unbound zone; every tenth conduit in
// monitor mode, action reset) and a capture with a read on each conduit
// and, on every ninth, a denied write followed by a second write (refused
// after the reset).
func learned(t *testing.T, northZones, southZones, hmis, plcs int) (*rules.Policy, string) {
	t.Helper()
	var y strings.Builder
	y.WriteString("version: 1\nname: learned\nmode: enforce\naction: reset\nzones:\n")
	for z := range northZones {
		fmt.Fprintf(&y, "  operations-floor-%c: { port: north, networks: [192.0.2.%d/27] }\n", 'a'+z, 128+32*z)
	}
	for z := range southZones {
		fmt.Fprintf(&y, "  process-cell-%d: { port: south, networks: [198.51.100.%d/26] }\n", z+1, 64*z)
	}
	y.WriteString("  historian: { networks: [203.0.113.0/24] }\nassets:\n")
	perZone := (hmis + northZones - 1) / northZones
	hmi := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{192, 0, 2, byte(130 + 32*(i/perZone) + i%perZone)})
	}
	plc := func(j int) netip.Addr {
		if j == plcs-1 {
			return netip.MustParseAddr("203.0.113.10")
		}
		return netip.AddrFrom4([4]byte{198, 51, 100, byte(64*(j%southZones) + 10 + j/southZones)})
	}
	for i := range hmis {
		fmt.Fprintf(&y, "  hmi%02d: { ip: %s, zone: operations-floor-%c }\n", i, hmi(i), 'a'+i/perZone)
	}
	for j := range plcs {
		zone := fmt.Sprintf("process-cell-%d", j%southZones+1)
		if j == plcs-1 {
			zone = "historian"
		}
		fmt.Fprintf(&y, "  plc%02d: { ip: %s, zone: %s }\n", j, plc(j), zone)
	}
	y.WriteString("l2: { allow: [arp] }\nconduits:\n")
	var frames [][]byte
	n := 0
	for i := range hmis {
		for j := range plcs {
			mode := ""
			if n%10 == 3 {
				mode = "\n    mode: monitor"
			}
			fmt.Fprintf(&y, "  - name: learned-hmi%02d-to-plc%02d-modbus\n    from: hmi%02d\n    to: plc%02d%s\n    rules:\n      - modbus:\n          units: [1]\n          allow:\n            - read: holding 0-99\n", i, j, i, j, mode)
			cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.AddrPortFrom(hmi(i), uint16(20000+n))}
			srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.AddrPortFrom(plc(j), 502)}
			fl := capture.NewTCPFlow(cli, srv)
			frames = append(frames, fl.Handshake()...)
			frames = append(frames, fl.Send(true, readReq(1)), fl.Send(false, readResp(1)))
			if n%9 == 0 {
				frames = append(frames,
					fl.Send(true, modbus.AppendRequest(nil, 2, 1, modbus.AppendWriteSingleRegister(nil, uint16(40+n%50), uint16(4000+n)))),
					fl.Send(true, modbus.AppendRequest(nil, 3, 1, modbus.AppendWriteSingleRegister(nil, 7, 4242))))
			}
			n++
		}
	}
	pol, err := rules.Parse("learned.yaml", []byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	return pol, writeCapture(t, frames)
}

// layoutCheck runs in the rendered page and writes what it measured into
// the DOM (#layout-check), for chromium --dump-dom: the diagram's label
// boxes as the browser laid them out, pairs of them that overlap, labels
// over zone boxes, empty labels (no font), and count cells showing 0 in
// the deny colour.
const layoutCheck = `<script>
(function () {
  var out = {labels: 0, overlaps: [], overBoxes: 0, empty: 0, redZeros: 0, rows: 0, pduCells: 0};
  var ls = Array.prototype.map.call(document.querySelectorAll('#diagram text.lbl, #matrix .lbl'), function (e) { return e.getBoundingClientRect(); });
  out.labels = ls.length;
  var boxes = Array.prototype.map.call(document.querySelectorAll('#diagram > rect'), function (e) { return e.getBoundingClientRect(); });
  function ov(a, b) { return a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5; }
  for (var i = 0; i < ls.length; i++) {
    if (ls[i].width < 1) out.empty++;
    for (var j = i + 1; j < ls.length; j++) if (ov(ls[i], ls[j])) out.overlaps.push([i, j]);
    for (var k = 0; k < boxes.length; k++) if (ov(ls[i], boxes[k])) out.overBoxes++;
  }
  document.querySelectorAll('td.n').forEach(function (td) {
    if (td.textContent.trim() === '0' && getComputedStyle(td).color === 'rgb(217, 48, 37)') out.redZeros++;
  });
  out.rows = document.querySelectorAll('#events tr.row').length;
  document.querySelectorAll('#events td.details').forEach(function (td) { if (td.textContent.indexOf('fc ') >= 0) out.pduCells++; });
  var pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>`

type layoutResult struct {
	Labels    int      `json:"labels"`
	Overlaps  [][2]int `json:"overlaps"`
	OverBoxes int      `json:"overBoxes"`
	Empty     int      `json:"empty"`
	RedZeros  int      `json:"redZeros"`
	Rows      int      `json:"rows"`
	PDUCells  int      `json:"pduCells"`
}

// chromium renders a page headless and returns what it printed (with
// --dump-dom, the DOM after the page's scripts ran).
type chromium struct {
	t   *testing.T
	bin string
	dir string
}

func (c chromium) run(file string, args ...string) []byte {
	c.t.Helper()
	args = append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
		"--disable-background-networking", "--disable-sync", "--disable-component-update", "--disable-default-apps",
		"--user-data-dir=" + filepath.Join(c.dir, "profile"), "--window-size=1280,1600"}, args...)
	cmd := exec.Command(c.bin, append(args, "file://"+file)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	c.t.Logf("chromium %s: %v", filepath.Base(file), time.Since(start).Round(time.Millisecond))
	return out
}

// render replays a learned policy, writes its report.html with the layout
// check and returns the page and the check's result as Chromium laid the
// page out.
func render(t *testing.T, c chromium, northZones, southZones, hmis, plcs int, shot string) (page string, res layoutResult) {
	t.Helper()
	pol, path := learned(t, northZones, southZones, hmis, plcs)
	rep, err := Run(Options{Policy: pol, WhatIf: true}, path)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(rep.Conduits); got < hmis*plcs {
		t.Fatalf("%d conduits in the report, want %d", got, hmis*plcs)
	}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page = b.String()
	if strings.Contains(page, "<link") || strings.Contains(page, "src=\"http") {
		t.Error("report.html refers to external assets")
	}
	file := filepath.Join(c.dir, fmt.Sprintf("report-%d.html", hmis*plcs))
	if err := os.WriteFile(file, []byte(strings.Replace(page, "</body>", layoutCheck+"</body>", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if keep := os.Getenv("OTGW_KEEP_REPORT"); keep != "" {
		// For a person to look at.
		_ = os.WriteFile(filepath.Join(keep, filepath.Base(file)), []byte(page), 0o644)
	}
	args := []string{"--dump-dom"}
	if shot != "" {
		args = append(args, "--screenshot="+shot) // one browser start for both
	}
	dom := c.run(file, args...)
	m := regexp.MustCompile(`<pre id="layout-check">([^<]*)</pre>`).FindSubmatch(dom)
	if m == nil {
		t.Fatalf("the page's layout check did not run; DOM tail:\n%s", tailBytes(dom, 400))
	}
	if err := json.Unmarshal(bytes.ReplaceAll(m[1], []byte("&quot;"), []byte(`"`)), &res); err != nil {
		t.Fatalf("layout check %s: %v", m[1], err)
	}
	t.Logf("layout of %d conduits: %+v", hmis*plcs, res)
	if len(res.Overlaps) != 0 || res.OverBoxes != 0 {
		t.Errorf("labels overlap: %d pairs of labels %v, %d label/zone-box overlaps", len(res.Overlaps), res.Overlaps, res.OverBoxes)
	}
	if res.Empty != 0 {
		t.Errorf("%d labels rendered with no width (no font?)", res.Empty)
	}
	if res.RedZeros != 0 {
		t.Errorf("%d zero counts are red", res.RedZeros)
	}
	if res.Rows == 0 || res.PDUCells < res.Rows/2 {
		t.Errorf("timeline: %d rows, %d with PDU details (function code), want most", res.Rows, res.PDUCells)
	}
	for _, want := range []string{"write_single_register (fc 6)", "after reset (", "refused by the policy (", "Enforce and monitor"} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	return page, res
}

// TestReportHTMLReadableAt500Conduits renders report.html in a headless
// Chromium, measuring the layout the browser made (not our estimate).
// A learned policy of 500 conduits in 20 zone pairs is shown as a from/to
// matrix of zone pairs, its screenshot a real picture (not blank, with the
// deny colour); a policy of 8 zone pairs is drawn as lines whose labels
// overlap no other label and no zone box. In both, no zero count is red
// and the timeline rows carry PDU details.
func TestReportHTMLReadableAt500Conduits(t *testing.T) {
	c := chromium{t: t, bin: testenv.NeedCmd(t, "chromium"), dir: t.TempDir()}

	shot := filepath.Join(c.dir, "report.png")
	page, res := render(t, c, 4, 4, 20, 25, shot)
	if !strings.Contains(page, `id="matrix"`) || strings.Contains(page, `id="diagram"`) {
		t.Errorf("500 conduits in 20 zone pairs: want the matrix view, not lines")
	}
	if cells := strings.Count(page, `<td class="cell`) - strings.Count(page, `<td class="cell empty"`); cells != 20 {
		t.Errorf("matrix has %d zone-pair cells, want 20", cells)
	}
	if res.Labels < 20 {
		t.Errorf("%d matrix labels, want at least one per zone pair (20)", res.Labels)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if keep := os.Getenv("OTGW_KEEP_REPORT"); keep != "" {
		if png, err := os.ReadFile(shot); err == nil {
			_ = os.WriteFile(filepath.Join(keep, "report.png"), png, 0o644)
		}
	}
	colors, red := picture(img)
	if bnd := img.Bounds(); bnd.Dx() != 1280 || bnd.Dy() != 1600 {
		t.Errorf("screenshot is %v, want 1280x1600", bnd)
	}
	if colors < 50 || red == 0 {
		t.Errorf("screenshot looks blank: %d colours, %d deny-red pixels", colors, red)
	}

	page, res = render(t, c, 2, 3, 4, 8, "")
	if !strings.Contains(page, `id="diagram"`) || !strings.Contains(page, "32 conduits in 8 zone pairs") {
		t.Errorf("32 conduits in 8 zone pairs: want the diagram of lines")
	}
	if res.Labels != 8 {
		t.Errorf("%d labels in the diagram, want one per zone pair (8)", res.Labels)
	}
}

// picture counts an image's distinct colours and its pixels in the deny
// red (#d93025, within antialiasing).
func picture(img image.Image) (colors, red int) {
	seen := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			seen[r<<16|g<<8|bl] = true
			if r > 190 && g < 90 && bl < 80 {
				red++
			}
		}
	}
	return len(seen), red
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// No silent cap: past MaxHTMLRows the page says how many rows it shows
// and where all are, and where report.json itself was cut, says that.
func TestReportHTMLSaysWhatItShows(t *testing.T) {
	ev := Event{File: "c.pcap", Frame: 1, Verdict: "deny", Proto: "modbus", Reason: "function_not_allowed",
		Fields: map[string]any{"fc": 6, "unit": 1, "addr": 5, "value": 4242, "tid": 9, "dir": "request"}}
	for _, tc := range []struct {
		name          string
		timeline, tot int
		want, wantNot string
	}{
		{"all shown", 10, 10, "", "Showing"},
		{"html cut", MaxHTMLRows + 5, MaxHTMLRows + 5, fmt.Sprintf("Showing the first %d of %d denies and alerts: report.json holds all %d.", MaxHTMLRows, MaxHTMLRows+5, MaxHTMLRows+5), ""},
		{"json cut", MaxHTMLRows + 5, 3 * MaxHTMLRows, fmt.Sprintf("Showing the first %d of %d denies and alerts: report.json holds the first %d; otgw replay --json prints every one.", MaxHTMLRows, 3*MaxHTMLRows, MaxHTMLRows+5), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &Report{Policy: "p", TimelineTotal: tc.tot}
			for range tc.timeline {
				rep.Timeline = append(rep.Timeline, ev)
			}
			var b bytes.Buffer
			if err := rep.WriteHTML(&b); err != nil {
				t.Fatal(err)
			}
			page := b.String()
			if tc.want != "" && !strings.Contains(page, tc.want) {
				t.Errorf("page lacks the notice %q", tc.want)
			}
			if tc.wantNot != "" && strings.Contains(page, tc.wantNot) {
				t.Errorf("page has %q with every row shown", tc.wantNot)
			}
			if rows := strings.Count(page, `<tr class="row`); rows != min(tc.timeline, MaxHTMLRows) {
				t.Errorf("%d rows, want %d", rows, min(tc.timeline, MaxHTMLRows))
			}
			if !strings.Contains(page, "write_single_register (fc 6) · unit 1 · addr 5 · value 4242<") {
				t.Errorf("row lacks the PDU details")
			}
		})
	}
}

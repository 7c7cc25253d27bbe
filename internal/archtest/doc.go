// Package archtest holds the project's architecture as tests: which of our
// packages may import which (TestLayers), so the layering that
// ../shared/DESIGN.md describes cannot erode one convenient import at a
// time. It has no code of its own.
//
// The rules, by import path under the module:
//
//   - protocols/... imports nothing of ours outside protocols/... (parsers
//     and per-flow sessions stand alone: the engine and dissect drive them);
//   - rules/... imports neither gateway/..., hal/..., simulate/... nor
//     update/... (the policy is pure: no files, signals, events or packets);
//   - gateway/... (non-test code) does not import simulate/... (the product
//     does not depend on its test harness);
//   - hal/... does not import gateway/... (hardware below the engine);
//   - update/... does not import gateway/... (updates stand alone; the
//     daemon adapts their events).
//
// Imports are checked transitively (go list -deps), on non-test code.
package archtest

// Package uitest holds the console's browser tests: the real internal/ui
// server (fed a synthetic 500-service mesh, or the demo mesh with live
// traffic) and its embedded front-end, driven in headless Chromium
// (internal/testenv/browser). It has no code outside its tests; it is a
// package of its own so that the tests may import localmesh and the demo,
// which themselves import internal/ui.
package uitest

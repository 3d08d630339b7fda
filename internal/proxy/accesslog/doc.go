// Package accesslog is trellis-proxy's access logging, Envoy's way: it converts an Envoy
// config.accesslog.v3.AccessLog (the file, stdout and stderr loggers; text and JSON formats with
// Envoy's command operators; the status code, duration, response flag, not-health-check, and, or
// filters) into a Logger that renders a finished request's streaminfo.Info.
//
// Formats are parsed once into a list of segments; rendering appends into a pooled buffer and does
// not allocate. Lines go to a buffered writer per file path, shared by every logger of that path and
// flushed by a background goroutine every second, so a request never waits on the disk; when the
// disk falls far behind, lines are dropped (and counted) rather than blocking. Parsing touches no
// file: the flusher opens a path the first time it has lines for it (so a path that cannot be
// opened is logged, not NACKed as Envoy would).
//
// It depends on streaminfo and the Envoy protos only: never on the connection manager or the
// server, which call Logger.Log when a request ends.
package accesslog

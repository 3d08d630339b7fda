package translate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

var update = flag.Bool("update", false, "rewrite testdata/*/*.golden.json from the current translation")

// TestGoldenTranslation translates every testdata/<case> config for each
// node listed in its proxies.txt and compares with <name>.golden.json.
// Every resource must also pass Validate(), be accepted by trellis-proxy's
// own conversion and name only resources that exist, so a golden file can
// never bless config a proxy would NACK.
func TestGoldenTranslation(t *testing.T) {
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", c.Name())
		t.Run(c.Name(), func(t *testing.T) {
			cfg, warns, err := config.LoadDir(dir)
			if err != nil {
				t.Fatalf("load %s: %v", dir, err)
			}
			for _, w := range warns {
				t.Logf("warning: %s", w)
			}
			snap := model.NewSnapshot(cfg)
			proxies := readProxies(t, filepath.Join(dir, "proxies.txt"))
			wantFiles := map[string]bool{}
			for _, p := range proxies {
				golden := filepath.Join(dir, p.Name+".golden.json")
				wantFiles[filepath.Base(golden)] = true
				t.Run(p.Name, func(t *testing.T) {
					res, err := Build(snap, p)
					if err != nil {
						t.Fatalf("Build: %v", err)
					}
					validateAll(t, res)
					checkConsistent(t, res)
					proxyAccepts(t, res)
					got := marshalResources(t, res)

					again, err := Build(snap, p)
					if err != nil {
						t.Fatalf("second Build: %v", err)
					}
					if !bytes.Equal(got, marshalResources(t, again)) {
						t.Fatal("two translations of the same snapshot differ")
					}

					if *update {
						if err := os.WriteFile(golden, got, 0o644); err != nil {
							t.Fatal(err)
						}
						return
					}
					want, err := os.ReadFile(golden)
					if err != nil {
						t.Fatalf("%v (run go test ./internal/translate -update to create it)", err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%s differs from the translation (rerun with -update and review the diff):\n%s", golden, firstDiff(want, got))
					}
				})
			}
			// Proxies translated from one snapshot share what they can
			// (serviceClusters): in the opposite order, on a fresh snapshot,
			// each must still get exactly its own golden config.
			if !*update {
				fresh := model.NewSnapshot(cfg)
				for i := len(proxies) - 1; i >= 0; i-- {
					p := proxies[i]
					res, err := Build(fresh, p)
					if err != nil {
						t.Fatalf("%s, reverse order: %v", p.Name, err)
					}
					want, _ := os.ReadFile(filepath.Join(dir, p.Name+".golden.json"))
					if got := marshalResources(t, res); !bytes.Equal(got, want) {
						t.Errorf("%s translated after the proxies listed after it differs from its golden file:\n%s", p.Name, firstDiff(want, got))
					}
				}
			}
			stale, _ := filepath.Glob(filepath.Join(dir, "*.golden.json"))
			for _, f := range stale {
				if !wantFiles[filepath.Base(f)] {
					t.Errorf("%s: no proxy in proxies.txt produces it; delete it", f)
				}
			}
		})
	}
}

// readProxies parses proxies.txt: one node ID per line, optionally
// followed by an INTERCEPTION_MODE (NONE or REDIRECT, bare or as
// INTERCEPTION_MODE=NONE). Blank lines and # comments are ignored.
func readProxies(t *testing.T, file string) []*model.Proxy {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*model.Proxy
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		p, err := model.ParseProxy(fields[0])
		if err != nil {
			t.Fatalf("%s:%d: %v", file, line, err)
		}
		if len(fields) > 1 {
			mode := strings.TrimPrefix(fields[1], "INTERCEPTION_MODE=")
			switch model.InterceptionMode(mode) {
			case model.InterceptNone, model.InterceptRedirect:
				p.Interception = model.InterceptionMode(mode)
			default:
				t.Fatalf("%s:%d: interception mode %q: want NONE or REDIRECT", file, line, fields[1])
			}
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no proxies", file)
	}
	return out
}

// marshalResources renders the four lists as indented JSON with proto field
// names. protojson's output is deliberately unstable in whitespace, so each
// message is compacted before the whole document is indented.
func marshalResources(t *testing.T, r *Resources) []byte {
	t.Helper()
	opts := protojson.MarshalOptions{UseProtoNames: true}
	list := func(msgs []proto.Message) []json.RawMessage {
		out := []json.RawMessage{}
		for _, m := range msgs {
			b, err := opts.Marshal(m)
			if err != nil {
				t.Fatalf("marshal %T: %v", m, err)
			}
			var c bytes.Buffer
			if err := json.Compact(&c, b); err != nil {
				t.Fatal(err)
			}
			out = append(out, c.Bytes())
		}
		return out
	}
	doc := struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
	}{
		Listeners: list(messages(r.Listeners)),
		Routes:    list(messages(r.Routes)),
		Clusters:  list(messages(r.Clusters)),
		Endpoints: list(messages(r.Endpoints)),
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func messages[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

// firstDiff shows the first differing line with a little context, enough
// to see what changed without dumping whole files.
func firstDiff(want, got []byte) string {
	w := strings.Split(string(want), "\n")
	g := strings.Split(string(got), "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, wl, gl)
		}
	}
	return "(no line differs)"
}

package kubeenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Generous: the API server takes several seconds on an idle 2-core machine, and tests share the
// machine with other builds.
const (
	etcdReadyTimeout      = 60 * time.Second
	apiserverReadyTimeout = 3 * time.Minute
	stopGrace             = 10 * time.Second
	// startAttempts covers losing a free port to another process between choosing and binding it.
	startAttempts = 3
	// failureLogBytes caps how much of the API server's log a failing test prints.
	failureLogBytes = 64 << 10
)

// ServiceClusterIPRange is where the server allocates Service ClusterIPs from.
const ServiceClusterIPRange = "10.96.0.0/16"

// Env is one running etcd and kube-apiserver.
type Env struct {
	// Kubeconfig is the path of a kubeconfig with admin credentials (a system:masters token), for
	// running binaries such as trellis against this server.
	Kubeconfig string
	// Host is the API server's URL, https://127.0.0.1:<port>.
	Host string
	// StartupTime is how long starting etcd and the API server took, until /readyz said ok.
	StartupTime time.Duration

	config    *rest.Config
	client    kubernetes.Interface
	dir       string
	etcd      *process
	apiserver *process
	stopOnce  sync.Once
	crds      sync.Mutex // serialises InstallIstioCRDs
	crdsDone  bool
}

// shared is the server of this test binary: started by the first Shared, stopped by Run.
var shared struct {
	mu      sync.Mutex
	running bool // inside Run
	env     *Env
	err     error // why the shared server could not start; every later caller fails with it
}

// Run runs the package's tests and then stops the shared server, if one was started. Call it from
// TestMain: func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }.
func Run(m *testing.M) int {
	shared.mu.Lock()
	shared.running = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.running = false
	if shared.env != nil {
		shared.env.Stop()
		shared.env = nil
	}
	return code
}

// Shared returns the API server shared by all tests of this test binary, starting it on first
// use (seconds; see docs/testing.md). Tests keep apart by working in their own Namespace. If t
// fails, the API server's log from the time of this call on is printed.
func Shared(t testing.TB) *Env {
	t.Helper()
	bins, err := findBinaries()
	if err != nil {
		missing(t, err)
		return nil
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.running {
		t.Fatalf("kubeenv.Shared: the package's TestMain must call kubeenv.Run, which stops the shared server")
	}
	if shared.env == nil && shared.err == nil {
		shared.env, shared.err = start(bins, t.Logf)
	}
	if shared.err != nil {
		t.Fatalf("kubeenv: %v", shared.err)
	}
	shared.env.logOnFailure(t)
	return shared.env
}

// Start starts a server of t's own, stopped when t ends. Prefer Shared: each server costs seconds
// to start and a few hundred MB.
func Start(t testing.TB) *Env {
	t.Helper()
	bins, err := findBinaries()
	if err != nil {
		missing(t, err)
		return nil
	}
	env, err := start(bins, t.Logf)
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	t.Cleanup(env.Stop)
	env.logOnFailure(t)
	return env
}

// Config returns a copy of the admin client configuration (bearer token in system:masters, the
// server's CA), free for the caller to modify. Client-side rate limiting is off.
func (e *Env) Config() *rest.Config { return rest.CopyConfig(e.config) }

// Client is an admin clientset for the server.
func (e *Env) Client() kubernetes.Interface { return e.client }

// Namespace creates a fresh namespace for t (named test-<random>) and returns its name. With no
// namespace controller running, deleting it at the end of t only marks it Terminating.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// Stop ends both processes and removes their data. It is idempotent.
func (e *Env) Stop() {
	e.stopOnce.Do(func() {
		e.apiserver.stop(stopGrace)
		e.etcd.stop(stopGrace)
		_ = os.RemoveAll(e.dir)
	})
}

// logOnFailure prints what the API server logged during t, if t fails.
func (e *Env) logOnFailure(t testing.TB) {
	from := e.apiserver.logSize()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log during this test (%s):\n%s", e.Host, e.apiserver.logTail(from, failureLogBytes))
		}
	})
}

// start brings up etcd and kube-apiserver in a new temporary directory, retrying with fresh
// ports when a process exits early (most likely a port taken in the meantime).
func start(bins binaries, logf func(string, ...any)) (*Env, error) {
	var errs []error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		env, retry, err := startOnce(bins)
		if err == nil {
			logf("kubeenv: etcd and kube-apiserver ready at %s in %v (RSS: kube-apiserver %d MiB, etcd %d MiB)",
				env.Host, env.StartupTime.Round(time.Millisecond), env.apiserver.rssKiB()>>10, env.etcd.rssKiB()>>10)
			return env, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
		if !retry {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// startOnce makes one attempt. retry says whether a process exited early, which a new attempt
// with other ports may fix; a server that stays up but never gets ready is not retried.
func startOnce(bins binaries) (env *Env, retry bool, err error) {
	began := time.Now()
	dir, err := newDir()
	if err != nil {
		return nil, false, err
	}
	e := &Env{dir: dir}
	defer func() {
		if err != nil {
			if e.apiserver != nil {
				e.apiserver.stop(stopGrace)
			}
			if e.etcd != nil {
				e.etcd.stop(stopGrace)
			}
			_ = os.RemoveAll(dir)
		}
	}()

	ports, err := freePorts(3)
	if err != nil {
		return nil, false, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	e.etcd, err = startProcess("etcd", bins.etcd, []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		// A test's data is thrown away: no need to wait for the disk.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, false, err
	}
	if err := waitHealthy(e.etcd, etcdURL+"/health", nil, "", etcdReadyTimeout); err != nil {
		return nil, exitedEarly(e.etcd), err
	}

	token, err := writeCredentials(dir)
	if err != nil {
		return nil, false, err
	}
	port := strconv.Itoa(ports[2])
	e.Host = "https://127.0.0.1:" + port
	certDir := filepath.Join(dir, "certs")
	e.apiserver, err = startProcess("kube-apiserver", bins.apiserver, []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconcilers refuse a loopback address for the "kubernetes" Service's
		// endpoints; with none, that Service simply has none.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + port,
		// Serving certificate and its CA generated by the server itself, for 127.0.0.1.
		"--cert-dir=" + certDir,
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		// No controller creates the "default" ServiceAccount, so this plugin would reject every Pod.
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
	}, filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, false, err
	}
	caFile := filepath.Join(certDir, "apiserver.crt")
	if err := waitHealthy(e.apiserver, e.Host+"/readyz", &caFile, token, apiserverReadyTimeout); err != nil {
		return nil, exitedEarly(e.apiserver), err
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, false, err
	}

	e.config = &rest.Config{
		Host:            e.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             -1, // tests issue bursts; client-side throttling would only slow them
	}
	if e.client, err = kubernetes.NewForConfig(e.Config()); err != nil {
		return nil, false, err
	}
	if e.Kubeconfig, err = writeKubeconfig(dir, e.Host, ca, token); err != nil {
		return nil, false, err
	}
	e.StartupTime = time.Since(began)
	return e, false, nil
}

func exitedEarly(p *process) bool {
	exited, _ := p.exited()
	return exited
}

// waitHealthy polls url until it answers 200 or p exits. With caFile, it speaks HTTPS trusting
// the CA in that file once the server has written it, and sends token as a bearer token.
func waitHealthy(p *process, url string, caFile *string, token string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	last := "no answer yet"
	for {
		if exited, err := p.exited(); exited {
			return fmt.Errorf("%s exited before it was ready (%v); its log:\n%s", p.name, err, p.logTail(0, failureLogBytes))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last: %s); its log:\n%s", p.name, timeout, last, p.logTail(0, failureLogBytes))
		}
		if caFile != nil && client.Transport == nil {
			if pem, err := os.ReadFile(*caFile); err == nil {
				pool := x509.NewCertPool()
				if pool.AppendCertsFromPEM(pem) {
					client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
				}
			}
		}
		if caFile == nil || client.Transport != nil {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePorts finds n distinct free TCP ports on 127.0.0.1. Another process can take one before
// our child binds it; start retries when that happens.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close() // held until all are chosen, so they differ
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

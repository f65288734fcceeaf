package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/internal/fleet"
)

// testPKI is a throwaway certificate authority and a broker certificate
// it signed for 127.0.0.1, written as PEM files.
type testPKI struct {
	CA, Cert, Key string
	pool          *x509.CertPool
}

// newTestPKI writes a CA named name and a server certificate for
// 127.0.0.1 signed by it into dir.
func newTestPKI(t *testing.T, dir, name string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{CA: filepath.Join(dir, name+"-ca.pem"), Cert: filepath.Join(dir, name+"-broker.pem"), Key: filepath.Join(dir, name+"-broker-key.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	for path, block := range map[string]*pem.Block{
		p.CA: {Type: "CERTIFICATE", Bytes: caDER}, p.Cert: {Type: "CERTIFICATE", Bytes: der}, p.Key: {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// buildExactly builds the exactly command into dir and returns its path.
func buildExactly(t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go") //lint:ignore SA1019 a fallback for a PATH without go
	}
	out := filepath.Join(dir, "exactly")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, "github.com/exactly-go/exactly/cmd/exactly")
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// runExactly runs the built command to its end, bounded by timeout, and
// returns its combined output and error.
func runExactly(t *testing.T, exe string, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = fleet.WithoutExactlyEnv(os.Environ())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("exactly %s did not end within %s (a hang):\n%s", strings.Join(args, " "), timeout, out.String())
	}
	return out.String(), err
}

// TestRunOrdersOverTLSAndSASLAgainstTheBrokerCommand builds the exactly
// command, starts `exactly broker` serving TLS with SASL, and runs `exactly
// run orders --tls --tls-ca … --sasl-mechanism scram-sha-256 --sasl-user …
// --sasl-password-file …` against it: it becomes ready and projects an
// order, and `exactly verify` with the same flags passes. A client that
// trusts another CA fails at once naming the unknown authority, and a
// wrong password fails without printing it; no log of any process, at
// debug level, contains either password.
func TestRunOrdersOverTLSAndSASLAgainstTheBrokerCommand(t *testing.T) {
	dir := t.TempDir()
	exe := buildExactly(t, dir)
	pki := newTestPKI(t, dir, "good")
	other := newTestPKI(t, dir, "other")
	const password, wrongPassword = "s3cret-Pa55-xyzzy", "not-the-Pa55-plugh"
	passFile, wrongFile := filepath.Join(dir, "password"), filepath.Join(dir, "wrong-password")
	if err := os.WriteFile(passFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongFile, []byte(wrongPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	listen, err := fleet.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, err := fleet.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	procs := &fleet.Fleet{}
	defer procs.Close(10 * time.Second)
	logs := map[string]string{"broker": filepath.Join(dir, "broker.log"), "run": filepath.Join(dir, "run.log")}
	procs.Set("broker", fleet.Spec{Path: exe, Log: logs["broker"], Args: []string{"broker", "--listen", listen,
		"--tls-cert", pki.Cert, "--tls-key", pki.Key, "--sasl-user", "u", "--sasl-password-file", passFile, "--log-level", "debug"}})
	clientFlags := []string{"--brokers", listen, "--tls", "--tls-ca", pki.CA, "--sasl-mechanism", "scram-sha-256", "--sasl-user", "u", "--sasl-password-file", passFile}
	procs.Set("run", fleet.Spec{Path: exe, Log: logs["run"], Args: append([]string{"run", "orders", "--log-level", "debug",
		"--state-dir", filepath.Join(dir, "state"), "--http", httpAddr, "--partitions", "2", "--commit-interval", "50ms", "--session-timeout", "2s"}, clientFlags...)})
	var outputs []string
	defer func() {
		if t.Failed() {
			for name, path := range logs {
				b, _ := os.ReadFile(path)
				t.Logf("log of %s:\n%s", name, b)
			}
			for _, out := range outputs {
				t.Logf("output:\n%s", out)
			}
		}
	}()
	if err := procs.Start("broker"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the broker to listen with TLS", func() bool {
		b, _ := os.ReadFile(logs["broker"])
		return strings.Contains(string(b), "broker listening on "+listen+" (TLS, SASL user u)")
	})
	if err := procs.Start("run"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + httpAddr
	waitFor(t, 30*time.Second, "run orders to be ready over TLS and SASL", func() bool {
		status, _ := get(t, base+"/readyz")
		return status == http.StatusOK
	})

	cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.DialTLSConfig(&tls.Config{RootCAs: pki.pool}),
		kgo.SASL(scram.Auth{User: "u", Pass: password}.AsSha256Mechanism()), kgo.DefaultProduceTopic(orders.DefaultInputTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const ts = 1732260000000
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("o-1"), Value: []byte(fmt.Sprintf(
		`{"metadata":{"eventId":"e-1","timestamp":%d},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c-1","createdAt":%d}}`, ts, ts))}).FirstErr(); err != nil {
		t.Fatalf("produce over TLS and SASL: %v", err)
	}
	waitFor(t, 30*time.Second, "GET /orders/o-1 to answer the projection", func() bool {
		status, body := get(t, base+"/orders/o-1")
		var p orders.Projection
		return status == http.StatusOK && json.Unmarshal([]byte(body), &p) == nil && p.CustomerID == "c-1"
	})
	if !procs.Stop("run", 15*time.Second) {
		t.Fatal("run orders did not stop on SIGTERM")
	}
	// The log tells the stop in the order it happens, from its cause on.
	runLog, _ := os.ReadFile(logs["run"])
	at := 0
	for _, step := range []string{`msg="stopping: committing what is pending, then closing the tasks"`, `cause="received SIGTERM`,
		`msg="final commit done; closing the tasks"`, `msg="partitions revoked"`, `msg="session closed; left the group"`, `msg=stopped`} {
		i := strings.Index(string(runLog[at:]), step)
		if i < 0 {
			t.Errorf("the log of run orders lacks %s after offset %d", step, at)
			break
		}
		at += i
	}

	out, err := runExactly(t, exe, time.Minute, append([]string{"verify", "--log-level", "debug", "--timeout", "30s"}, clientFlags...)...)
	outputs = append(outputs, out)
	if err != nil || !strings.Contains(out, "PASS") {
		t.Errorf("exactly verify over TLS and SASL = %v; want a pass:\n%s", err, out)
	}

	wrongCA := append([]string(nil), clientFlags...)
	wrongCA[4] = other.CA
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"a CA that did not sign the broker's certificate", append([]string{"run", "orders", "--log-level", "debug", "--http", "", "--state-dir", filepath.Join(dir, "state-ca")}, wrongCA...),
			[]string{"x509", "unknown authority", "--tls-ca"}},
		{"the same without creating topics", append([]string{"run", "orders", "--log-level", "debug", "--http", "", "--create-topics=false", "--state-dir", filepath.Join(dir, "state-ca2")}, wrongCA...),
			[]string{"x509", "unknown authority", "--tls-ca"}},
		{"a wrong password", []string{"run", "orders", "--log-level", "debug", "--http", "", "--state-dir", filepath.Join(dir, "state-pw"),
			"--brokers", listen, "--tls-ca", pki.CA, "--sasl-mechanism", "scram-sha-256", "--sasl-user", "u", "--sasl-password-file", wrongFile},
			[]string{"SASL authentication failed", "--sasl-user"}},
		{"verify with a wrong password", []string{"verify", "--timeout", "30s", "--brokers", listen, "--tls-ca", pki.CA,
			"--sasl-mechanism", "scram-sha-512", "--sasl-user", "u", "--sasl-password-file", wrongFile},
			[]string{"authentication failed", "--sasl-mechanism"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := runExactly(t, exe, 45*time.Second, tc.args...)
			outputs = append(outputs, out)
			if err == nil {
				t.Fatalf("exactly %s succeeded; want a failure:\n%s", strings.Join(tc.args, " "), out)
			}
			last := out[strings.LastIndex(strings.TrimRight(out, "\n"), "\n")+1:]
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("the error %q lacks %q", last, w)
				}
			}
			t.Logf("failed after %s: %s", time.Since(start).Round(time.Millisecond), last)
		})
	}

	for name, path := range logs {
		b, _ := os.ReadFile(path)
		outputs = append(outputs, string(b))
		if len(b) == 0 {
			t.Errorf("the log of %s is empty", name)
		}
	}
	for _, out := range outputs {
		for _, secret := range []string{password, wrongPassword} {
			if strings.Contains(out, secret) {
				t.Errorf("a log contains the password %q:\n%s", secret, out)
			}
		}
	}
}

// TestBrokerTakesThePasswordFromTheEnvironmentNeverFromTheCommandLine:
// `exactly broker --sasl-user u` takes the password from
// EXACTLY_SASL_PASSWORD, and a client authenticates with it (PLAIN here);
// --sasl-password on the command line, where ps shows it, is refused.
func TestBrokerTakesThePasswordFromTheEnvironmentNeverFromTheCommandLine(t *testing.T) {
	const password = "env-Pa55-unique"
	root := newRootCommand()
	root.SetArgs([]string{"broker", "--listen", "127.0.0.1:0", "--sasl-user", "u", "--sasl-password", password})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "EXACTLY_SASL_PASSWORD") || strings.Contains(err.Error(), password) {
		t.Errorf("broker --sasl-password = %v; want a refusal pointing to EXACTLY_SASL_PASSWORD, without the password", err)
	}

	t.Setenv("EXACTLY_SASL_PASSWORD", password)
	root = newRootCommand()
	out, w := io.Pipe()
	root.SetOut(w)
	root.SetArgs([]string{"broker", "--listen", "127.0.0.1:0", "--sasl-user", "u"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); w.Close() }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("broker: %v", err)
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("broker printed %q: %v", line, err)
	}
	go io.Copy(io.Discard, out)
	addr, _, _ := strings.Cut(strings.TrimPrefix(line, "broker listening on "), " ")
	if !strings.Contains(line, "(SASL user u)") {
		t.Errorf("broker printed %q; want it to say SASL is on", line)
	}
	for _, tc := range []struct {
		pass string
		ok   bool
	}{{password, true}, {"wrong", false}} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: "u", Pass: tc.pass}.AsMechanism()))
		if err != nil {
			t.Fatal(err)
		}
		pingCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		err = cl.Ping(pingCtx)
		stop()
		cl.Close()
		if (err == nil) != tc.ok {
			t.Errorf("PLAIN with password %q: ping = %v; want ok=%v", tc.pass, err, tc.ok)
		}
	}
}

// TestEveryKafkaCommandTakesTheSecurityFlags: each command that talks to
// Kafka has the whole set of TLS and SASL flags, and the password is no
// visible flag.
func TestEveryKafkaCommandTakesTheSecurityFlags(t *testing.T) {
	root := newRootCommand()
	for _, path := range [][]string{{"run", "orders"}, {"payments"}, {"verify"}, {"relay"}, {"chaos"}, {"reset"}} {
		cmd, _, err := root.Find(path)
		if err != nil {
			t.Fatalf("%v: %v", path, err)
		}
		for _, name := range []string{"sasl-mechanism", "sasl-user", "sasl-password-file", "tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name"} {
			if cmd.Flags().Lookup(name) == nil {
				t.Errorf("exactly %s lacks --%s", strings.Join(path, " "), name)
			}
		}
		if f := cmd.Flags().Lookup("sasl-password"); f == nil || !f.Hidden {
			t.Errorf("exactly %s: --sasl-password should exist hidden, for EXACTLY_SASL_PASSWORD and the config file", strings.Join(path, " "))
		}
	}
}

package kafkaflags

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/exactly-go/exactly"
)

const secret = "pa55-w0rd-unique"

func parse(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLoadRefusesIncompleteOrUnsafeSettingsWithoutShowingThePassword:
// every refusal names the flag to fix, and none shows the password.
func TestLoadRefusesIncompleteOrUnsafeSettingsWithoutShowingThePassword(t *testing.T) {
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	os.WriteFile(passFile, []byte(secret+"\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		env  string // the password as the environment gives it
		want string
	}{
		{"password on the command line", []string{"--sasl-mechanism", "plain", "--sasl-user", "u", "--sasl-password", secret}, "", "use --sasl-password-file or EXACTLY_SASL_PASSWORD"},
		{"password twice", []string{"--sasl-mechanism", "plain", "--sasl-user", "u", "--sasl-password-file", passFile}, secret, "given twice"},
		{"no mechanism", []string{"--sasl-user", "u", "--sasl-password-file", passFile}, "", "add --sasl-mechanism"},
		{"unknown mechanism", []string{"--sasl-mechanism", "gssapi", "--sasl-user", "u", "--sasl-password-file", passFile}, "", "use plain, scram-sha-256 or scram-sha-512"},
		{"no user", []string{"--sasl-mechanism", "plain", "--sasl-password-file", passFile}, "", "needs --sasl-user"},
		{"no password", []string{"--sasl-mechanism", "plain", "--sasl-user", "u"}, "", "needs a password"},
		{"empty password file", []string{"--sasl-mechanism", "plain", "--sasl-user", "u", "--sasl-password-file", empty}, "", "is empty"},
		{"missing password file", []string{"--sasl-mechanism", "plain", "--sasl-user", "u", "--sasl-password-file", filepath.Join(dir, "nope")}, "", "--sasl-password-file"},
		{"cert without key", []string{"--tls-cert", passFile}, "", "--tls-cert and --tls-key go together"},
		{"CA that is no PEM", []string{"--tls-ca", passFile}, "", "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := parse(t, tc.args...)
			if tc.env != "" {
				f.fs.Lookup(passwordFlag).Value.Set(tc.env) // as the command's environment binding does
			}
			_, err := f.Load()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v; want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestLoadTurnsFlagsIntoConfigOptionsAndChildEnvironment: a password file
// and a mechanism in any case give the library's SASL, client options and
// the environment for child processes (the file, not the password); the
// description leaves the password out.
func TestLoadTurnsFlagsIntoConfigOptionsAndChildEnvironment(t *testing.T) {
	passFile := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(passFile, []byte(secret+"\r\n"), 0o600)
	s, err := parse(t, "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "u", "--sasl-password-file", passFile, "--tls-server-name", "kafka.example").Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.SASL == nil || s.SASL.Mechanism != "SCRAM-SHA-512" || s.SASL.User != "u" || s.SASL.Password != secret {
		t.Errorf("SASL = %+v; want SCRAM-SHA-512, u and the file's password without its line end", s.SASL)
	}
	if s.TLS == nil || s.TLS.ServerName != "kafka.example" {
		t.Errorf("TLS = %+v; want TLS (implied by --tls-server-name) with the server name", s.TLS)
	}
	if n := len(s.ClientOptions()); n != 2 {
		t.Errorf("%d client options; want TLS and SASL", n)
	}
	env := strings.Join(s.Env(), " ")
	for _, want := range []string{"EXACTLY_TLS=true", "EXACTLY_SASL_MECHANISM=SCRAM-SHA-512", "EXACTLY_SASL_USER=u", "EXACTLY_SASL_PASSWORD_FILE=" + passFile, "EXACTLY_TLS_SERVER_NAME=kafka.example"} {
		if !strings.Contains(env, want) {
			t.Errorf("Env() = %s; lacks %s", env, want)
		}
	}
	for _, shown := range []string{env, s.String(), fmt.Sprint(s.SASL), fmt.Sprintf("%+v", *s.SASL), fmt.Sprintf("%#v", s.SASL)} {
		if strings.Contains(shown, secret) {
			t.Errorf("%q shows the password", shown)
		}
	}

	plain, err := parse(t).Load()
	if err != nil || plain.TLS != nil || plain.SASL != nil || plain.String() != "plaintext" || len(plain.Env()) != 0 {
		t.Errorf("no flags: %v %v; want plaintext and no environment", plain, err)
	}
}

// TestExplainNamesTheFlagToCheck: connection failures get the flags to
// check; other errors pass unchanged.
func TestExplainNamesTheFlagToCheck(t *testing.T) {
	other := errors.New("topic missing")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("list topics: %w", kerr.SaslAuthenticationFailed), "--sasl-user"},
		{fmt.Errorf("list topics: %w", io.EOF), "--tls"},
		{other, "topic missing"},
	} {
		if got := (Security{}).Explain(tc.err); !strings.Contains(got.Error(), tc.want) || !errors.Is(got, tc.err) {
			t.Errorf("Explain(%v) = %v; want it wrapped with %q", tc.err, got, tc.want)
		}
	}
	if (Security{}).Explain(nil) != nil {
		t.Error("Explain(nil) != nil")
	}

	// A closed connection, by security: a client with SASL but no TLS is
	// told that either may be the cause, a client with both only about
	// SASL, a client with TLS only about SASL missing.
	eof := fmt.Errorf("list topics: %w", io.EOF)
	saslOnly := Security{SASL: &exactly.SASL{Mechanism: "PLAIN", User: "u", Password: "p"}}
	both := Security{TLS: &tls.Config{}, SASL: saslOnly.SASL}
	tlsOnly := Security{TLS: &tls.Config{}}
	for _, tc := range []struct {
		s           Security
		want, avoid []string
	}{
		{saslOnly, []string{"add --tls", "--sasl-user"}, nil},
		{both, []string{"--sasl-user"}, []string{"add --tls"}},
		{tlsOnly, []string{"--sasl-"}, []string{"add --tls"}},
	} {
		got := tc.s.Explain(eof).Error()
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: Explain(EOF) = %q; want it to mention %q", tc.s, got, w)
			}
		}
		for _, a := range tc.avoid {
			if strings.Contains(got, a) {
				t.Errorf("%s: Explain(EOF) = %q; want no %q", tc.s, got, a)
			}
		}
	}
}

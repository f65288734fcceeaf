// Package kafkaflags is the one place where the exactly command's
// connection security is configured: it registers the TLS and SASL flags
// every command that talks to Kafka takes, and turns them into the
// library's [exactly.Config] fields and into franz-go options for the
// commands' own clients. It also registers the flags with which
// `exactly broker` serves TLS and SASL for local trials.
//
// A password is never a flag value, which would show in ps: it comes from
// a file (--sasl-password-file), from the environment
// (EXACTLY_SASL_PASSWORD) or from the config file (key sasl-password). It
// is never printed: Security's String and the errors of this package leave
// it out.
package kafkaflags

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/exactly-go/exactly"
)

// passwordFlag is the hidden flag that carries the password from the
// environment (EXACTLY_SASL_PASSWORD) or the config file; given on the
// command line it is refused.
const passwordFlag = "sasl-password"

// The SASL mechanisms, as the flag takes them and as Kafka names them.
var mechanisms = map[string]string{
	"plain":         "PLAIN",
	"scram-sha-256": "SCRAM-SHA-256",
	"scram-sha-512": "SCRAM-SHA-512",
}

// Flags are the client security flags of one command, as parsed. Call
// [Flags.Load] once the command line, the environment and the config file
// have been applied.
type Flags struct {
	fs               *pflag.FlagSet
	SASLMechanism    string
	SASLUser         string
	SASLPasswordFile string
	saslPassword     string
	TLS              bool
	TLSCA            string
	TLSCert          string
	TLSKey           string
	TLSServerName    string
}

// Register adds the client security flags to fs: --sasl-mechanism,
// --sasl-user, --sasl-password-file, --tls, --tls-ca, --tls-cert,
// --tls-key and --tls-server-name.
func Register(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.SASLMechanism, "sasl-mechanism", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512 (default: no SASL)")
	fs.StringVar(&f.SASLUser, "sasl-user", "", "SASL user name")
	fs.StringVar(&f.SASLPasswordFile, "sasl-password-file", "", "file holding the SASL password (or set EXACTLY_SASL_PASSWORD; never a flag value)")
	registerPassword(fs, &f.saslPassword)
	fs.BoolVar(&f.TLS, "tls", false, "connect to the brokers with TLS (implied by the other --tls-* flags)")
	fs.StringVar(&f.TLSCA, "tls-ca", "", "PEM file of the CA certificates that sign the brokers' certificates (default: the system's)")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "PEM file of the client certificate, for brokers that require one (with --tls-key)")
	fs.StringVar(&f.TLSKey, "tls-key", "", "PEM file of the client certificate's private key")
	fs.StringVar(&f.TLSServerName, "tls-server-name", "", "name the brokers' certificates must carry (default: the host of each broker address)")
	return f
}

func registerPassword(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, passwordFlag, "", "the SASL password: only from EXACTLY_SASL_PASSWORD or the config file")
	fs.MarkHidden(passwordFlag)
}

// password resolves the SASL password from the file or the hidden flag
// (filled from the environment or the config file).
func password(fs *pflag.FlagSet, file, fromEnv string) (string, error) {
	if fs.Changed(passwordFlag) {
		return "", errors.New("--sasl-password is not taken on the command line, where ps shows it: use --sasl-password-file or EXACTLY_SASL_PASSWORD")
	}
	switch {
	case file != "" && fromEnv != "":
		return "", errors.New("the SASL password is given twice, by --sasl-password-file and by EXACTLY_SASL_PASSWORD (or sasl-password in the config file): keep one")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--sasl-password-file: %w", err)
		}
		pass := strings.TrimRight(string(b), "\r\n")
		if pass == "" {
			return "", fmt.Errorf("--sasl-password-file %s is empty", file)
		}
		return pass, nil
	}
	return fromEnv, nil
}

// Security is the connection security the flags describe, with its files
// read. The zero value is plaintext without authentication.
type Security struct {
	// TLS is the client TLS configuration; nil for plaintext.
	TLS *tls.Config
	// SASL are the credentials; nil for none.
	SASL *exactly.SASL

	env []string
}

// Load checks the flags and reads the files they name. Its errors say which
// flag to fix and never contain the password.
func (f *Flags) Load() (Security, error) {
	var s Security
	pass, err := password(f.fs, f.SASLPasswordFile, f.saslPassword)
	if err != nil {
		return s, err
	}
	if f.SASLMechanism != "" || f.SASLUser != "" || pass != "" {
		mech, ok := mechanisms[strings.ToLower(f.SASLMechanism)]
		switch {
		case f.SASLMechanism == "":
			return s, errors.New("--sasl-user or a SASL password is given without --sasl-mechanism: add --sasl-mechanism plain, scram-sha-256 or scram-sha-512")
		case !ok:
			return s, fmt.Errorf("--sasl-mechanism %q: use plain, scram-sha-256 or scram-sha-512", f.SASLMechanism)
		case f.SASLUser == "":
			return s, errors.New("--sasl-mechanism needs --sasl-user")
		case pass == "":
			return s, errors.New("--sasl-mechanism needs a password: --sasl-password-file, or EXACTLY_SASL_PASSWORD")
		}
		s.SASL = &exactly.SASL{Mechanism: mech, User: f.SASLUser, Password: pass}
		s.env = append(s.env, "EXACTLY_SASL_MECHANISM="+f.SASLMechanism, "EXACTLY_SASL_USER="+f.SASLUser)
		if f.SASLPasswordFile != "" {
			s.env = append(s.env, "EXACTLY_SASL_PASSWORD_FILE="+absolute(f.SASLPasswordFile))
		} else {
			s.env = append(s.env, "EXACTLY_SASL_PASSWORD="+pass)
		}
	}
	if f.TLS || f.TLSCA != "" || f.TLSCert != "" || f.TLSKey != "" || f.TLSServerName != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.TLSServerName}
		s.env = append(s.env, "EXACTLY_TLS=true")
		if f.TLSCA != "" {
			pem, err := os.ReadFile(f.TLSCA)
			if err != nil {
				return s, fmt.Errorf("--tls-ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return s, fmt.Errorf("--tls-ca %s holds no PEM certificate", f.TLSCA)
			}
			s.env = append(s.env, "EXACTLY_TLS_CA="+absolute(f.TLSCA))
		}
		if (f.TLSCert == "") != (f.TLSKey == "") {
			return s, errors.New("--tls-cert and --tls-key go together: give both, or neither")
		}
		if f.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
			if err != nil {
				return s, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.TLSCert, f.TLSKey, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
			s.env = append(s.env, "EXACTLY_TLS_CERT="+absolute(f.TLSCert), "EXACTLY_TLS_KEY="+absolute(f.TLSKey))
		}
		if f.TLSServerName != "" {
			s.env = append(s.env, "EXACTLY_TLS_SERVER_NAME="+f.TLSServerName)
		}
		s.TLS = cfg
	}
	return s, nil
}

// ClientOptions are the franz-go options that give a client this security.
func (s Security) ClientOptions() []kgo.Opt {
	var opts []kgo.Opt
	if s.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(s.TLS))
	}
	if a := s.SASL; a != nil {
		switch a.Mechanism {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: a.User, Pass: a.Password}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: a.User, Pass: a.Password}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: a.User, Pass: a.Password}.AsSha512Mechanism()))
		}
	}
	return opts
}

// Env is the security as EXACTLY_* environment variables, for child
// processes of the exactly command (the instances of `exactly chaos`):
// file paths made absolute, the password as its file when one was given,
// else as EXACTLY_SASL_PASSWORD. The environment of a process is readable
// only by its user.
func (s Security) Env() []string { return s.env }

// String describes the security without the password.
func (s Security) String() string {
	var parts []string
	if s.TLS != nil {
		parts = append(parts, "TLS")
	}
	if s.SASL != nil {
		parts = append(parts, fmt.Sprintf("SASL %s as %s", s.SASL.Mechanism, s.SASL.User))
	}
	if len(parts) == 0 {
		return "plaintext"
	}
	return strings.Join(parts, ", ")
}

// Explain returns err with what to check when it says the connection's
// security failed: a broker certificate the client cannot verify, a broker
// that does not speak TLS, refused SASL credentials, or a broker that
// closed the connection as brokers do when authentication fails. Other
// errors, and nil, are returned unchanged.
func (s Security) Explain(err error) error {
	if err == nil {
		return nil
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		invalid          x509.CertificateInvalidError
		hostname         x509.HostnameError
		verification     *tls.CertificateVerificationError
		header           tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownAuthority):
		return fmt.Errorf("%w: the brokers' certificate is signed by an authority this client does not trust: give --tls-ca the PEM file of the CA that signed it", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w: the brokers' certificate does not name the address dialled: give --tls-server-name the name it carries, or a broker address it names", err)
	case errors.As(err, &invalid), errors.As(err, &verification):
		return fmt.Errorf("%w: the brokers' certificate cannot be verified: check --tls-ca and the certificate's dates", err)
	case errors.As(err, &header):
		return fmt.Errorf("%w: the broker does not speak TLS at this address: drop --tls, or give the address of its TLS listener", err)
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Errorf("%w: check --sasl-mechanism, --sasl-user and the password (--sasl-password-file or EXACTLY_SASL_PASSWORD)", err)
	case errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("%w: check --sasl-mechanism against the mechanisms the brokers enable", err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		var hint string
		switch {
		case s.SASL != nil && s.TLS == nil:
			hint = "brokers do so when a plaintext client meets a listener that requires TLS (add --tls) and when SASL authentication failed (check --sasl-mechanism, --sasl-user and the password: --sasl-password-file or EXACTLY_SASL_PASSWORD)"
		case s.SASL != nil:
			hint = "brokers do so when SASL authentication failed: check --sasl-mechanism, --sasl-user and the password (--sasl-password-file or EXACTLY_SASL_PASSWORD)"
		case s.TLS == nil:
			hint = "brokers do so when a client without SASL or TLS meets a listener that requires them: add the --sasl-* flags or --tls if the cluster asks for them"
		default:
			hint = "brokers do so when a client without SASL meets a listener that requires it: add the --sasl-* flags if the cluster asks for them"
		}
		return fmt.Errorf("%w: the broker closed the connection; %s", err, hint)
	}
	return err
}

func absolute(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// ServerFlags are the security flags of `exactly broker`, as parsed.
type ServerFlags struct {
	fs               *pflag.FlagSet
	TLSCert          string
	TLSKey           string
	SASLUser         string
	SASLPasswordFile string
	saslPassword     string
}

// RegisterServer adds the broker's security flags to fs: --tls-cert,
// --tls-key, --sasl-user and --sasl-password-file.
func RegisterServer(fs *pflag.FlagSet) *ServerFlags {
	f := &ServerFlags{fs: fs}
	fs.StringVar(&f.TLSCert, "tls-cert", "", "PEM file of the broker's certificate: serve TLS only (with --tls-key)")
	fs.StringVar(&f.TLSKey, "tls-key", "", "PEM file of the broker certificate's private key")
	fs.StringVar(&f.SASLUser, "sasl-user", "", "require SASL: this user may connect with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&f.SASLPasswordFile, "sasl-password-file", "", "file holding the --sasl-user's password (or set EXACTLY_SASL_PASSWORD)")
	registerPassword(fs, &f.saslPassword)
	return f
}

// ServerSecurity is what a broker serves: TLS with a certificate, SASL for
// one user.
type ServerSecurity struct {
	// TLS is the listener's TLS configuration; nil for plaintext.
	TLS *tls.Config
	// User and Password are the one SASL user; User is "" when SASL is off.
	User, Password string
}

// Load checks the flags and reads the files they name.
func (f *ServerFlags) Load() (ServerSecurity, error) {
	var s ServerSecurity
	pass, err := password(f.fs, f.SASLPasswordFile, f.saslPassword)
	if err != nil {
		return s, err
	}
	switch {
	case f.SASLUser == "" && pass != "":
		return s, errors.New("a SASL password is given without --sasl-user: add --sasl-user")
	case f.SASLUser != "" && pass == "":
		return s, errors.New("--sasl-user needs a password: --sasl-password-file, or EXACTLY_SASL_PASSWORD")
	}
	s.User, s.Password = f.SASLUser, pass
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return s, errors.New("--tls-cert and --tls-key go together: give both, or neither")
	}
	if f.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return s, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.TLSCert, f.TLSKey, err)
		}
		s.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	return s, nil
}

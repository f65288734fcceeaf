package exactly

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/exactly-go/exactly/internal/kafka"
)

// TestConfigCarriesEveryField: every field of the runtime's configuration
// has a counterpart in Config, and runtimeConfig carries each one over, so
// a field added to the runtime cannot be silently unreachable for users.
func TestConfigCarriesEveryField(t *testing.T) {
	public := reflect.TypeFor[Config]()
	runtime := reflect.TypeFor[kafka.Config]()
	for f := range runtime.Fields() {
		if _, ok := public.FieldByName(f.Name); !ok {
			t.Errorf("kafka.Config.%s has no counterpart in exactly.Config", f.Name)
		}
	}
	for f := range public.Fields() {
		if _, ok := runtime.FieldByName(f.Name); !ok {
			t.Errorf("exactly.Config.%s does not reach the runtime", f.Name)
		}
	}

	var cfg Config
	v := reflect.ValueOf(&cfg).Elem()
	for i := range v.NumField() {
		setNonZero(t, v.Type().Field(i).Name, v.Field(i))
	}
	got := reflect.ValueOf(cfg.runtimeConfig())
	for i := range got.NumField() {
		if got.Field(i).IsZero() {
			t.Errorf("runtimeConfig drops %s", got.Type().Field(i).Name)
		}
	}
	if s := cfg.runtimeConfig().SASL; *s != (kafka.SASL{Mechanism: "x", User: "x", Password: "x"}) {
		t.Errorf("runtimeConfig carries SASL as %+v", *s)
	}
}

// setNonZero sets v to a non-zero value of its type, and the fields of a
// struct of this package it points to (SASL) as well.
func setNonZero(t *testing.T, name string, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
	case reflect.Func:
		v.Set(reflect.MakeFunc(v.Type(), func([]reflect.Value) []reflect.Value { return nil }))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		if e := v.Elem(); e.Type().PkgPath() == reflect.TypeFor[Config]().PkgPath() {
			for i := range e.NumField() {
				if e.Type().Field(i).IsExported() {
					setNonZero(t, name+"."+e.Type().Field(i).Name, e.Field(i))
				}
			}
		}
	case reflect.Interface:
		// Registerer and TracerProvider: any implementation will do.
		for _, impl := range []any{prometheus.NewRegistry(), noop.NewTracerProvider()} {
			if reflect.TypeOf(impl).Implements(v.Type()) {
				v.Set(reflect.ValueOf(impl))
				return
			}
		}
		t.Fatalf("Config.%s: no value of interface %s", name, v.Type())
	default:
		t.Fatalf("Config.%s: no non-zero value for kind %s", name, v.Kind())
	}
}

// TestSASLNeverPrintsThePassword: printing the credentials, as a value, a
// pointer or a log attribute, leaves the password out.
func TestSASLNeverPrintsThePassword(t *testing.T) {
	const password = "hunter2-unique"
	s := &SASL{Mechanism: "SCRAM-SHA-256", User: "app", Password: password}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("connecting", "sasl", *s, "config", Config{SASL: s})
	for _, shown := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", *s, *s, *s, s), fmt.Sprintf("%+v", Config{SASL: s}), logged.String()} {
		if strings.Contains(shown, password) {
			t.Errorf("%s shows the password", shown)
		}
		if !strings.Contains(shown, "app") && !strings.Contains(shown, "0x") {
			t.Errorf("%s does not show the user", shown)
		}
	}
}

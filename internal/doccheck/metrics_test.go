package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// metricDef is a metric as the code defines it.
type metricDef struct {
	name, kind string
	labels     []string // variable labels
	where      string
}

// definedMetrics finds every metric the module's library code defines: a
// prometheus.New{Counter,Gauge,Histogram,Summary}[Vec|Func] call with a
// literal Name, or a prometheus.NewDesc with a literal name (a collector of
// gauges).
func definedMetrics(t *testing.T, root string) map[string]metricDef {
	defs := map[string]metricDef{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "cmd" || rel == "bench" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
				return true
			}
			def := metricDef{where: rel + ":" + strconv.Itoa(fset.Position(call.Pos()).Line)}
			switch fn := sel.Sel.Name; {
			case fn == "NewDesc":
				def.name, def.kind = stringLit(call.Args[0]), "gauge"
				if len(call.Args) > 2 {
					def.labels = stringSlice(call.Args[2])
				}
			case strings.HasPrefix(fn, "New"):
				kind := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(fn, "New"), "Vec"), "Func")
				switch kind {
				case "Counter", "Gauge", "Histogram", "Summary":
				default:
					return true
				}
				def.kind = strings.ToLower(kind)
				opts, ok := call.Args[0].(*ast.CompositeLit)
				if !ok {
					return true
				}
				for _, el := range opts.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
							def.name = stringLit(kv.Value)
						}
					}
				}
				if strings.HasSuffix(fn, "Vec") && len(call.Args) > 1 {
					def.labels = stringSlice(call.Args[1])
				}
			default:
				return true
			}
			if def.name == "" {
				t.Errorf("%s: a metric whose name is not a literal; the reference cannot check it", def.where)
				return true
			}
			defs[def.name] = def
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return defs
}

func stringLit(e ast.Expr) string {
	if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
		s, _ := strconv.Unquote(lit.Value)
		return s
	}
	return ""
}

func stringSlice(e ast.Expr) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range lit.Elts {
		out = append(out, stringLit(el))
	}
	return out
}

// documentedMetric is a row of METRICS.md's reference table.
type documentedMetric struct {
	kind   string
	labels []string
}

var metricRow = regexp.MustCompile("^\\| `([a-z0-9_]+)` \\| (counter|gauge|histogram|summary) \\|([^|]*)\\|")

func documentedMetrics(t *testing.T, root string) map[string]documentedMetric {
	b, err := os.ReadFile(filepath.Join(root, "METRICS.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]documentedMetric{}
	for _, line := range strings.Split(string(b), "\n") {
		m := metricRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		for _, l := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[3], -1) {
			labels = append(labels, l[1])
		}
		docs[m[1]] = documentedMetric{kind: m[2], labels: labels}
	}
	return docs
}

// TestMetricsReferenceMatchesTheCode: METRICS.md lists every metric the
// library defines, with its type and labels, and nothing else.
func TestMetricsReferenceMatchesTheCode(t *testing.T) {
	root, _ := filepath.Abs("../..")
	defs, docs := definedMetrics(t, root), documentedMetrics(t, root)
	if len(defs) < 20 {
		t.Fatalf("found only %d metric definitions; the scan is broken", len(defs))
	}
	for name, def := range defs {
		doc, ok := docs[name]
		switch {
		case !ok:
			t.Errorf("%s: metric %s is not in METRICS.md", def.where, name)
		case doc.kind != def.kind:
			t.Errorf("METRICS.md says %s is a %s; %s defines a %s", name, doc.kind, def.where, def.kind)
		default:
			for _, l := range def.labels {
				if !slices.Contains(doc.labels, l) {
					t.Errorf("METRICS.md does not list label %q of %s (%s)", l, name, def.where)
				}
			}
		}
	}
	for name := range docs {
		if _, ok := defs[name]; !ok {
			t.Errorf("METRICS.md lists %s, which no code defines", name)
		}
	}
}

var promQLName = regexp.MustCompile(`\b((?:exactly|inbox|outbox_relay|sideeffect|duplicates|events|buffer|dropped)_[a-z0-9_]*[a-z])\b`)

// TestAlertsAndDashboardNameOnlyDocumentedMetrics: every metric an alert
// rule or a dashboard panel queries is one the library exports (a
// histogram's _bucket, _sum and _count series included).
func TestAlertsAndDashboardNameOnlyDocumentedMetrics(t *testing.T) {
	root, _ := filepath.Abs("../..")
	docs := documentedMetrics(t, root)
	for _, file := range []string{"deploy/prometheus/alerts.yml", "deploy/grafana/exactly.json"} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, m := range promQLName.FindAllStringSubmatch(string(b), -1) {
			name := m[1]
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if trimmed, ok := strings.CutSuffix(name, suffix); ok && docs[trimmed].kind == "histogram" {
					base = trimmed
				}
			}
			if _, ok := docs[base]; !ok {
				t.Errorf("%s queries %s, which is not a documented metric", file, name)
			}
			seen++
		}
		if seen == 0 {
			t.Errorf("%s names no metric", file)
		}
	}
}

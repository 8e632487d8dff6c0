package pkgbuild

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// manPage writes program's manual page (roff, the man macros) from its
// help tree: NAME and DESCRIPTION from the program's entry in programs,
// then each command's --help, its flags as a tagged list, then EXIT
// STATUS, FILES and SEE ALSO.
func manPage(p program, root *command, version string, date time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, ".\\\" %s(%d), made from `%s --help` by packaging/pkgbuild (make packages).\n", p.Name, p.Section, p.Name)
	fmt.Fprintf(&b, ".TH %s %d %s %s %s\n", quote(strings.ToUpper(p.Name)), p.Section, quote(date.UTC().Format("2006-01-02")),
		quote("devid "+version), quote("devid"))
	b.WriteString(".nh\n.ad l\n") // no hyphenation, ragged right: paths and flags stay whole
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", escape(p.Name), escape(p.Summary))
	b.WriteString(".SH SYNOPSIS\n")
	var leaves []*command
	root.walk(func(c *command) {
		if len(c.Subs) == 0 && len(c.Path) > 0 {
			leaves = append(leaves, c)
		}
	})
	if p.Synopsis != "" {
		for _, l := range strings.Split(strings.TrimSpace(p.Synopsis), "\n") {
			synopsis(&b, p.Name, strings.TrimSpace(l))
		}
	} else {
		for _, c := range leaves {
			synopsis(&b, p.Name, usageLine(p.Name, c))
		}
	}
	synopsis(&b, p.Name, p.Name+" --version"+map[bool]string{true: " [--json]"}[len(root.Subs) > 0 && p.Name != "devid-principals"])
	b.WriteString(".SH DESCRIPTION\n")
	for _, para := range strings.Split(strings.TrimSpace(p.Description), "\n\n") {
		b.WriteString(".PP\n" + escape(para) + "\n")
	}
	if len(root.Subs) == 0 || p.Name == "devid-principals" {
		b.WriteString(".SH USAGE\n")
		helpBody(&b, root)
	}
	if len(root.Subs) > 0 {
		b.WriteString(".SH COMMANDS\n")
		root.walk(func(c *command) {
			if len(c.Path) == 0 {
				return
			}
			fmt.Fprintf(&b, ".SS %s\n", quote(p.Name+" "+strings.Join(c.Path, " ")))
			helpBody(&b, c)
		})
	}
	b.WriteString(".SH EXIT STATUS\n")
	for _, para := range strings.Split(strings.TrimSpace(p.Exit), "\n\n") {
		b.WriteString(".PP\n" + escape(para) + "\n")
	}
	if len(p.Files) > 0 {
		b.WriteString(".SH FILES\n")
		for _, f := range p.Files {
			fmt.Fprintf(&b, ".TP\n.I %s\n%s\n", quote(f[0]), escape(f[1]))
		}
	}
	b.WriteString(".SH SEE ALSO\n")
	b.WriteString(escape(strings.Join(p.SeeAlso, ", ")) + "\n")
	b.WriteString(".PP\n" + escape("The README of devid, "+readmeURL+", has the whole story: setting up a CA, hosts and workstations, the configuration files and the metrics.") + "\n")
	return b.Bytes()
}

const readmeURL = "https://github.com/devid-ssh/devid/blob/main/README.md"

// usageLine is the command's synopsis: its "Usage:" line without the
// word, or its path.
func usageLine(prog string, c *command) string {
	for _, l := range strings.Split(c.Help, "\n") {
		if u, ok := strings.CutPrefix(l, "Usage: "); ok {
			return strings.TrimSpace(u)
		}
	}
	return strings.TrimSpace(prog + " " + strings.Join(c.Path, " "))
}

// synopsis writes one synopsis line: the program and its commands in
// bold, the arguments in roman.
func synopsis(b *bytes.Buffer, prog, line string) {
	if line == "" {
		return
	}
	f := strings.Fields(line)
	n := 1
	for n < len(f) && isWord(f[n]) {
		n++
	}
	fmt.Fprintf(b, ".PP\n.B %s\n", quote(strings.Join(f[:n], " ")))
	if n < len(f) {
		b.WriteString(escape(strings.Join(f[n:], " ")) + "\n")
	}
}

// isWord reports whether s is a command name (lower case, digits, "-"),
// not an argument (FILE, [flags], --config).
func isWord(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

// helpBody renders a --help text: its summary paragraphs as text, its
// flags and command lists as tagged paragraphs, anything else (a usage of
// several lines) as it is. The "Usage:" line is left out (SYNOPSIS has
// it), and so are the lines that point to --help and --version.
func helpBody(b *bytes.Buffer, c *command) {
	for _, block := range strings.Split(strings.TrimRight(c.Help, "\n"), "\n\n") {
		lines := strings.Split(strings.Trim(block, "\n"), "\n")
		switch {
		case len(lines) == 0 || lines[0] == "":
		case len(lines) == 1 && strings.HasPrefix(lines[0], "Usage: "):
		case strings.HasPrefix(lines[0], "Run '"):
		case lines[0] == "Flags:":
			flagList(b, lines[1:])
		case lines[0] == "Commands:":
			for _, l := range lines[1:] {
				name, summary, _ := strings.Cut(strings.TrimSpace(l), " ")
				fmt.Fprintf(b, ".TP\n.B %s\n%s\n", quote(name), escape(strings.TrimSpace(summary)))
			}
		case strings.HasPrefix(lines[0], " ") || lines[0] == "Usage:" || len(lines) > 1 && strings.HasPrefix(lines[1], "  "):
			b.WriteString(".PP\n.nf\n.RS 4\n")
			for _, l := range lines {
				b.WriteString(escape(l) + "\n")
			}
			b.WriteString(".RE\n.fi\n")
		default:
			b.WriteString(".PP\n" + escape(strings.Join(lines, "\n")) + "\n")
		}
	}
}

// flagList renders package flag's PrintDefaults: "  -name type" lines,
// each followed by its description, indented with a tab.
func flagList(b *bytes.Buffer, lines []string) {
	for _, l := range lines {
		if strings.HasPrefix(l, "  -") {
			name, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
			// package flag shows "-name"; devid's commands take both, and
			// the README writes "--name".
			if arg = strings.TrimSpace(arg); arg != "" {
				fmt.Fprintf(b, ".TP\n.BI %s %s\n", quote("-"+name), quote(" "+arg))
			} else {
				fmt.Fprintf(b, ".TP\n.B %s\n", quote("-"+name))
			}
			continue
		}
		b.WriteString(escape(strings.TrimSpace(l)) + "\n")
	}
}

// quote makes s one macro argument: escaped and in double quotes.
func quote(s string) string {
	return `"` + strings.ReplaceAll(escape(s), `"`, `\(dq`) + `"`
}

// escape makes text safe in roff: backslashes and minus signs escaped, a
// leading "." or "'" (a request) guarded, anything outside ASCII as a
// named Unicode character.
func escape(s string) string {
	var b strings.Builder
	lineStart := true
	for _, r := range s {
		if lineStart && (r == '.' || r == '\'') {
			b.WriteString(`\&`)
		}
		lineStart = r == '\n'
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r == '\t':
			b.WriteByte(' ')
		case r == utf8.RuneError || r < 0x20 && r != '\n' || r == 0x7f:
			b.WriteString(`\[uFFFD]`)
		case r >= 0x80:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// gzipped compresses b as gzip -9n would: no name, no time, so that the
// same page gives the same bytes.
func gzipped(b []byte) []byte {
	var out bytes.Buffer
	w, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

package pkgbuild

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// bashCompletion writes a bash completion script for program from its
// help tree: after the program and each command, the commands below it;
// after a "-", the flags of the command so far; anything else completes
// file names (complete -o default). Flags go after the commands, as the
// programs take them.
func bashCompletion(prog string, root *command) []byte {
	subs := map[string][]string{}
	flags := map[string][]string{}
	root.walk(func(c *command) {
		// Keys start with "_": bash refuses an empty one.
		key := strings.Join(append([]string{"_"}, c.Path...), " ")
		for _, s := range c.Subs {
			subs[key] = append(subs[key], s.Path[len(s.Path)-1])
		}
		f := append([]string{"--help"}, c.Flags...)
		if len(c.Path) == 0 {
			f = append(f, "--version")
		}
		flags[key] = f
	})
	fn := "_" + strings.NewReplacer("-", "_").Replace(prog)
	var b bytes.Buffer
	fmt.Fprintf(&b, "# bash completion for %s, made from `%s --help` by packaging/pkgbuild (make packages).\n", prog, prog)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString("\tlocal -A subs=(\n")
	for _, k := range sortedKeys(subs) {
		fmt.Fprintf(&b, "\t\t[%q]=%q\n", k, strings.Join(subs[k], " "))
	}
	b.WriteString("\t)\n\tlocal -A flags=(\n")
	for _, k := range sortedKeys(flags) {
		fmt.Fprintf(&b, "\t\t[%q]=%q\n", k, strings.Join(flags[k], " "))
	}
	b.WriteString(`	)
	local cur=${COMP_WORDS[COMP_CWORD]} path=_ w i
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		[[ $w == -* || -z ${subs[$path]+set} ]] && continue
		if [[ " ${subs[$path]} " == *" $w "* ]]; then
			path="$path $w"
		else
			return 0 # not a command of this program
		fi
	done
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "${flags[$path]}" -- "$cur"))
	elif [[ -n ${subs[$path]+set} ]]; then
		COMPREPLY=($(compgen -W "${subs[$path]}" -- "$cur"))
	fi
}
`)
	fmt.Fprintf(&b, "complete -o default -F %s %s\n", fn, prog)
	return b.Bytes()
}

func sortedKeys(m map[string][]string) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

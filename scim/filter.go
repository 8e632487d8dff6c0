package scim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2), the subset devid
// answers: terms "ATTRPATH eq VALUE" joined by "and", where ATTRPATH may
// name a sub-attribute (emails.value) and select elements of a
// multi-valued attribute (emails[type eq "work"].value), and a valuePath
// alone tests for such an element (members[value eq "ID"]). VALUE is a
// JSON string, true, false, null or a number; a bare word (externalId eq
// jyoung, as an example in Entra ID's documentation has it) is taken as a
// string.

// attrPath is an attribute path: an optional schema URN, the attribute
// and an optional sub-attribute, names in lower case (SCIM names are
// case-insensitive).
type attrPath struct {
	urn, name, sub string
	raw            string // as given, for messages
}

func (p attrPath) String() string { return p.raw }

// term is one "ATTRPATH eq VALUE", or a valuePath alone (value nil).
type term struct {
	attr  attrPath
	elem  []term  // the [filter] of a valuePath, on sub-attributes
	value *string // nil: the valuePath has a matching element
}

// path is a PATCH path: an attribute path with, optionally, a [filter]
// selecting elements, and then a sub-attribute.
type path struct {
	attr attrPath
	elem []term
}

// maxFilterLen bounds a filter or path; real ones are short.
const maxFilterLen = 4096

// filterError is a malformed or unsupported filter or path.
type filterError struct{ msg string }

func (e *filterError) Error() string { return e.msg }

func filterErrorf(format string, args ...any) error {
	return &filterError{fmt.Sprintf(format, args...)}
}

type lexer struct {
	s   string
	pos int
}

func (l *lexer) space() {
	for l.pos < len(l.s) && l.s[l.pos] == ' ' {
		l.pos++
	}
}

func (l *lexer) end() bool { return l.pos >= len(l.s) }

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:$-+@", c) >= 0
}

// word reads a run of name characters.
func (l *lexer) word() string {
	start := l.pos
	for l.pos < len(l.s) && wordByte(l.s[l.pos]) {
		l.pos++
	}
	return l.s[start:l.pos]
}

// quoted reads a JSON string.
func (l *lexer) quoted() (string, error) {
	start := l.pos
	l.pos++ // the opening quote
	for l.pos < len(l.s) {
		switch l.s[l.pos] {
		case '\\':
			l.pos += 2
			continue
		case '"':
			l.pos++
			var v string
			if err := json.Unmarshal([]byte(l.s[start:l.pos]), &v); err != nil {
				return "", filterErrorf("bad string at %d: %v", start+1, err)
			}
			return v, nil
		}
		l.pos++
	}
	return "", filterErrorf("string at %d is not closed", start+1)
}

// parseAttrPath splits an attribute path: [URN ":"] NAME ["." SUB].
func parseAttrPath(raw string) (attrPath, error) {
	p := attrPath{raw: raw}
	rest := raw
	if len(rest) > 4 && strings.EqualFold(rest[:4], "urn:") {
		i := strings.LastIndexByte(rest, ':')
		p.urn, rest = strings.ToLower(rest[:i]), rest[i+1:]
	}
	name, sub, _ := strings.Cut(rest, ".")
	p.name, p.sub = strings.ToLower(name), strings.ToLower(sub)
	if !validName(p.name) || sub != "" && !validName(p.sub) {
		return p, filterErrorf("%q is not an attribute path", raw)
	}
	return p, nil
}

// validName: ATTRNAME = ALPHA *(nameChar), nameChar = "-" / "_" / DIGIT /
// ALPHA; "$ref" too.
func validName(s string) bool {
	if s == "$ref" {
		return true
	}
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseFilter parses a filter (query parameter filter).
func parseFilter(s string) ([]term, error) {
	if len(s) > maxFilterLen {
		return nil, filterErrorf("filter of %d bytes; at most %d", len(s), maxFilterLen)
	}
	l := &lexer{s: s}
	terms, err := l.terms(false)
	if err != nil {
		return nil, err
	}
	if !l.end() {
		return nil, filterErrorf("unexpected %q at %d", l.s[l.pos:], l.pos+1)
	}
	return terms, nil
}

// terms reads terms joined by "and", up to the end (or, inner, a "]").
func (l *lexer) terms(inner bool) ([]term, error) {
	var out []term
	for {
		t, err := l.term(inner)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		l.space()
		if l.end() || inner && l.s[l.pos] == ']' {
			return out, nil
		}
		at := l.pos
		switch w := strings.ToLower(l.word()); w {
		case "and":
		case "or", "not":
			return nil, filterErrorf("%q at %d is not supported: devid filters with eq and and only", w, at+1)
		case "":
			return nil, filterErrorf("unexpected %q at %d", l.s[at:], at+1)
		default:
			return nil, filterErrorf("want and, not %q, at %d", w, at+1)
		}
	}
}

func (l *lexer) term(inner bool) (term, error) {
	l.space()
	var t term
	at := l.pos
	if !l.end() && l.s[l.pos] == '(' {
		return t, filterErrorf("parentheses at %d are not supported: devid filters with eq and and only", at+1)
	}
	w := l.word()
	if w == "" {
		if l.end() {
			return t, filterErrorf("want an attribute at the end")
		}
		return t, filterErrorf("want an attribute at %d, not %q", at+1, l.s[at:])
	}
	var err error
	if t.attr, err = parseAttrPath(w); err != nil {
		return t, err
	}
	if !l.end() && l.s[l.pos] == '[' {
		if inner {
			return t, filterErrorf("nested [ at %d", l.pos+1)
		}
		if t.attr.sub != "" {
			return t, filterErrorf("%q: a [filter] goes after the attribute, before its sub-attribute", w)
		}
		l.pos++
		if t.elem, err = l.terms(true); err != nil {
			return t, err
		}
		if l.end() || l.s[l.pos] != ']' {
			return t, filterErrorf("[ of %q is not closed", w)
		}
		l.pos++
		t.attr.raw += "[…]"
		if !l.end() && l.s[l.pos] == '.' {
			l.pos++
			sub := l.word()
			if !validName(strings.ToLower(sub)) {
				return t, filterErrorf("want a sub-attribute after %q", w+"[…].")
			}
			t.attr.sub = strings.ToLower(sub)
			t.attr.raw += "." + sub
		}
	}
	l.space()
	if l.end() || inner && l.s[l.pos] == ']' || l.peekWord("and") {
		if t.elem == nil || t.attr.sub != "" {
			return t, filterErrorf("want an operator after %q", t.attr.raw)
		}
		return t, nil // presence of a matching element
	}
	at = l.pos
	switch op := strings.ToLower(l.word()); op {
	case "eq":
	case "ne", "co", "sw", "ew", "pr", "gt", "ge", "lt", "le":
		return t, filterErrorf("operator %q is not supported: devid filters with eq only", op)
	case "":
		return t, filterErrorf("want an operator at %d, not %q", at+1, l.s[at:])
	default:
		return t, filterErrorf("unknown operator %q at %d", op, at+1)
	}
	l.space()
	at = l.pos
	if l.end() {
		return t, filterErrorf("want a value after eq")
	}
	var v string
	if l.s[l.pos] == '"' {
		if v, err = l.quoted(); err != nil {
			return t, err
		}
	} else if v = l.word(); v == "" {
		return t, filterErrorf("want a value at %d, not %q", at+1, l.s[at:])
	}
	t.value = &v
	return t, nil
}

// peekWord reports whether the next word is w (in any case).
func (l *lexer) peekWord(w string) bool {
	save := l.pos
	got := l.word()
	l.pos = save
	return strings.EqualFold(got, w)
}

// parsePath parses a PATCH path.
func parsePath(s string) (path, error) {
	if len(s) > maxFilterLen {
		return path{}, filterErrorf("path of %d bytes; at most %d", len(s), maxFilterLen)
	}
	l := &lexer{s: s}
	w := l.word()
	p := path{}
	var err error
	if p.attr, err = parseAttrPath(w); err != nil {
		return p, err
	}
	if !l.end() && l.s[l.pos] == '[' {
		if p.attr.sub != "" {
			return p, filterErrorf("%q: a [filter] goes after the attribute, before its sub-attribute", s)
		}
		l.pos++
		if p.elem, err = l.terms(true); err != nil {
			return p, err
		}
		if l.end() || l.s[l.pos] != ']' {
			return p, filterErrorf("[ of %q is not closed", s)
		}
		l.pos++
		if !l.end() && l.s[l.pos] == '.' {
			l.pos++
			sub := strings.ToLower(l.word())
			if !validName(sub) {
				return p, filterErrorf("want a sub-attribute after ].")
			}
			p.attr.sub = sub
		}
	}
	if !l.end() {
		return p, filterErrorf("%q is not a path (unexpected %q)", s, l.s[l.pos:])
	}
	p.attr.raw = s
	return p, nil
}

// element is one value of an attribute, by sub-attribute (lower case; ""
// for a simple attribute's value).
type element map[string]string

// view is a resource as filters see it: attribute (lower case) →
// values.
type view map[string][]element

// caseExact are the attributes compared exactly; the rest ignore case
// (RFC 7643: userName, displayName, emails are caseExact false).
var caseExact = map[string]bool{"id": true, "externalid": true, "members": true}

func (v view) match(terms []term) bool {
	for _, t := range terms {
		if !v.matchTerm(t) {
			return false
		}
	}
	return true
}

func (v view) matchTerm(t term) bool {
	for _, el := range v[t.attr.name] {
		if !elementMatch(el, t.elem) {
			continue
		}
		if t.value == nil {
			return true
		}
		sub := t.attr.sub
		if _, simple := el[""]; !simple && sub == "" {
			sub = "value"
		}
		got, ok := el[sub]
		if ok && (got == *t.value || !caseExact[t.attr.name] && strings.EqualFold(got, *t.value)) {
			return true
		}
	}
	return false
}

// elementMatch reports whether an element of a multi-valued attribute
// passes a valuePath's [filter], whose attributes are its sub-attributes.
func elementMatch(el element, terms []term) bool {
	for _, t := range terms {
		got, ok := el[t.attr.name]
		if !ok || t.value == nil || !strings.EqualFold(got, *t.value) {
			return false
		}
	}
	return true
}

// checkTerms refuses a filter on attributes the resource type does not
// filter on: allowed maps attributes to their sub-attributes ("" for a
// simple attribute).
func checkTerms(terms []term, allowed map[string][]string, what string) error {
	for _, t := range terms {
		subs, ok := allowed[t.attr.name]
		if !ok || t.attr.urn != "" && !strings.HasPrefix(t.attr.urn, "urn:ietf:params:scim:schemas:core:2.0:") {
			return filterErrorf("cannot filter %s on %q (devid filters them on %s)", what, t.attr.raw, allowedList(allowed))
		}
		if t.attr.sub != "" && !slices.Contains(subs, t.attr.sub) {
			return filterErrorf("cannot filter %s on %q: %s has no sub-attribute %s that devid filters on", what, t.attr.raw, t.attr.name, t.attr.sub)
		}
		for _, e := range t.elem {
			if !slices.Contains(subs, e.attr.name) || e.attr.sub != "" || e.elem != nil || e.value == nil {
				return filterErrorf("cannot filter %s on %q: [%s] is not a filter on its sub-attributes", what, t.attr.raw, e.attr.raw)
			}
		}
		if t.elem != nil && len(subs) == 1 && subs[0] == "" {
			return filterErrorf("%q is not multi-valued", t.attr.name)
		}
	}
	return nil
}

func allowedList(allowed map[string][]string) string {
	var names []string
	for _, n := range []string{"id", "username", "externalid", "displayname", "emails", "members", "active"} {
		if _, ok := allowed[n]; ok {
			names = append(names, map[string]string{"id": "id", "username": "userName", "externalid": "externalId",
				"displayname": "displayName", "emails": "emails.value", "members": "members.value", "active": "active"}[n])
		}
	}
	return strings.Join(names, ", ")
}

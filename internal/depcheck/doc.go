// Package depcheck holds tests of what the module's code may depend on.
// It has no code of its own.
//
//   - deps_test.go: each binary's dependencies, the packages outside the
//     standard library it links (go list -deps, for linux/amd64), are
//     committed as cmd/NAME/deps.txt, and the test fails when they differ,
//     so that a new dependency shows in review. After a change of imports,
//     regenerate every list with
//
//     go test ./internal/depcheck -update
//
//     The binaries that run on every host (devid-hostd, devid-principals)
//     and the operator's devid must not link step-ca
//     (github.com/smallstep/certificates), and devid must not link the
//     CA's stores either (inventory, revocation, github.com/smallstep/nosql):
//     it speaks to the CA through package adminapi only.
//
//   - layers_test.go: every package of the module sits in one layer of an
//     ordered table, and an import may only go to the same layer or a
//     lower one: no import arrow runs back up. A new package fails the
//     test until it is placed in the table.
package depcheck

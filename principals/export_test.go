package principals

import (
	"bytes"
	"testing/iotest"
)

// DecideData is DecideFile for a file's contents, read one byte at a time
// so that every line crosses reads.
func DecideData(file string, data []byte, account string, c *Certificate) (Decision, error) {
	return decideReader(file, iotest.OneByteReader(bytes.NewReader(data)), account, c)
}

const (
	ByteClass   = byteClass
	ClassBlank  = classBlank
	ClassSyntax = classSyntax
	ClassOther  = classOther
)

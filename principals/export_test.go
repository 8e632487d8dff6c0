package principals

// DecideData is DecideFile for a file's contents.
var DecideData = decideData

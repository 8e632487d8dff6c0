package hostd

// KRLRetry is krlRetry, for TestOutageStorm.
var KRLRetry = krlRetry

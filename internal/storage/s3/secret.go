package s3

import "github.com/tidemark-backup/tidemark/internal/secret"

// Credentials are static S3 credentials. Most deployments leave
// Config.Credentials nil and let the environment provide them. The secret
// parts never print (package secret).
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey secret.String
	SessionToken    secret.String // optional, for temporary credentials
}

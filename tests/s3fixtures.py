"""S3 test-server fixtures (moto in server mode, real HTTP on 127.0.0.1). Filled in by the S3 work."""

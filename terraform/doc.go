// Package terraform holds no Go code for operators: it is the Terraform
// module in this directory, and its tests check the module against the real
// Nomad (every jobspec it deploys parses with the variables it passes, and
// its ACL policy is accepted).
package terraform

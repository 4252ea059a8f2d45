module github.com/instance-profile-operator/tools/pause

go 1.26.0

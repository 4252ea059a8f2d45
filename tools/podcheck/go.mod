module github.com/instance-profile-operator/tools/podcheck

go 1.26.0

"""AWS ECS (Fargate or EC2 launch type): one ECS task per ScriptHut task."""

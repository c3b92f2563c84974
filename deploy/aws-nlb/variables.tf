variable "name" {
  description = "Name prefix for the NLB, target group and security group (NLB names: at most 32 characters)."
  type        = string
  default     = "certgate"
}

variable "vpc_id" {
  description = "VPC of the targets."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's CIDR. The NLB connects to the targets from its private addresses in it (client IP preservation is off), so certgate's proxy_protocol_from and the target security group rules use it."
  type        = string
  default     = "10.0.0.0/16"
}

variable "subnet_ids" {
  description = "Subnets for the NLB, one per availability zone (public subnets for an internet-facing NLB)."
  type        = list(string)
}

variable "internal" {
  description = "true: an internal NLB (reachable from the VPC and peered networks only)."
  type        = bool
  default     = false
}

variable "allowed_cidrs" {
  description = "Client networks allowed to reach port 443 of the NLB."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "target_type" {
  description = "instance (EC2 instance ids) or ip (ECS/EKS pod or task addresses)."
  type        = string
  default     = "instance"

  validation {
    condition     = contains(["instance", "ip"], var.target_type)
    error_message = "target_type must be \"instance\" or \"ip\"."
  }
}

variable "target_ids" {
  description = "Instance ids or IP addresses running certgate (listener on 8443, admin on 9901). Leave empty to register targets elsewhere (an Auto Scaling group, the AWS Load Balancer Controller)."
  type        = list(string)
  default     = []
}

variable "target_security_group_id" {
  description = "Security group of the targets; when set, rules are added letting the NLB reach 8443 (traffic) and 9901 (health checks)."
  type        = string
  default     = null
}

variable "deregistration_delay" {
  description = "Seconds a deregistering target keeps its connections. Keep it above certgate's shutdown_grace (30s) so a drain is not cut short."
  type        = number
  default     = 45
}

variable "tcp_idle_timeout_seconds" {
  description = "NLB TCP idle timeout (60-6000; AWS default 350). certgate's timeouts.idle and timeouts.read must stay below it."
  type        = number
  default     = 350
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

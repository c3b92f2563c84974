output "nlb_dns_name" {
  description = "Point the service's DNS name (a CNAME or alias) here; the server certificate must carry that name."
  value       = aws_lb.certgate.dns_name
}

output "nlb_zone_id" {
  description = "For a Route 53 alias record."
  value       = aws_lb.certgate.zone_id
}

output "nlb_arn" {
  value = aws_lb.certgate.arn
}

output "target_group_arn" {
  description = "Register certgate targets here (port 8443) from an Auto Scaling group or the AWS Load Balancer Controller."
  value       = aws_lb_target_group.certgate.arn
}

output "nlb_security_group_id" {
  description = "Reference it in the targets' security group (8443 and 9901) if target_security_group_id was not given."
  value       = aws_security_group.nlb.id
}

output "proxy_protocol_from" {
  description = "The CIDR to put in certgate.yaml proxy_protocol_from (VPC_CIDR)."
  value       = var.vpc_cidr
}

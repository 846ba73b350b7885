"""The ProcessMsgDelivery job: its payload (`job`), its SQL (`repository`), its steps
(`pipeline`), and the team rules it applies (`policy`)."""

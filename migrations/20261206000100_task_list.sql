-- tasks/list pages a principal's tasks in task id order.
CREATE INDEX ticket_tasks_principal ON ticket_tasks (principal, task_id);

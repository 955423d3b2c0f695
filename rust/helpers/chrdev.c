// SPDX-License-Identifier: GPL-2.0

#include <linux/device.h>
#include <linux/fs.h>
#include <linux/pipe_fs_i.h>
#include <linux/uio.h>

__rust_helper struct device *rust_helper_device_create_named(const struct class *cls,
							     struct device *parent,
							     dev_t devt, void *drvdata,
							     const char *name)
{
	return device_create(cls, parent, devt, drvdata, "%s", name);
}

__rust_helper void rust_helper_iov_iter_ubuf(struct iov_iter *i,
					     unsigned int direction,
					     void __user *buf, size_t count)
{
	iov_iter_ubuf(i, direction, buf, count);
}

__rust_helper bool rust_helper_pipe_is_empty(const struct pipe_inode_info *pipe)
{
	return pipe_is_empty(pipe);
}
